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

/** Logs in through the form. */
export async function logIn(page: Page, user: string, password: string) {
  await page.goto("/login");
  await hydrated(page);
  await page.locator("#login-name").fill(user);
  await page.locator("#login-password").fill(password);
  await page.locator("#login-form").getByRole("button", { name: "Log in" }).click();
  await expect(page.getByTestId("whoami")).toContainText(user);
}

/**
 * Where screenshots go: the README's docs/screenshots/ only when asked (`make screenshots`
 * sets KUBEFN_SCREENSHOTS_DIR), else Playwright's untracked output directory, so that
 * `make test` leaves the checkout's tracked files as they were.
 */
const screenshotsDir = process.env.KUBEFN_SCREENSHOTS_DIR || "test-results/screenshots";

/** Saves a screenshot of the page as it is (for the README with `make screenshots`). Light theme unless `dark`. */
export async function screenshot(page: Page, name: string, options: { dark?: boolean; fullPage?: boolean } = {}) {
  await page.emulateMedia({ colorScheme: options.dark ? "dark" : "light" });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${screenshotsDir}/${name}.png`, fullPage: options.fullPage ?? false });
  await page.emulateMedia({ colorScheme: "light" });
}
