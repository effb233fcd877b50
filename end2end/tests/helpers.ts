import { expect, type Page } from "@playwright/test";

// Unique per run, so the suite can run against a server that has seen earlier runs.
export const run = Date.now().toString(36);

export async function hydrated(page: Page) {
  await expect(page.locator("body[data-hydrated=true]")).toBeAttached();
}

/** Signs up through the form; the header naming the user proves the server function answered. */
export async function signUp(page: Page, user: string, password: string) {
  await page.goto("/login");
  await hydrated(page);
  await page.locator("#signup-name").fill(user);
  await page.locator("#signup-password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByTestId("whoami")).toContainText(user);
}
