import { expect, test } from "@playwright/test";
import { hydrated, logIn, run, signUp } from "./helpers";

// A phone's width: no page may scroll sideways (wide tables scroll inside their own box).
test.use({ viewport: { width: 390, height: 844 } });

async function pageWidth(page: import("@playwright/test").Page) {
  return page.evaluate(() => document.documentElement.scrollWidth);
}

test("every page fits a phone screen and stays keyboard-usable", async ({ page, browser }) => {
  const user = `e2e-phone-${run}`;
  const fn = `phone-${run}`;
  await signUp(page, user, "e2e-password-10");
  expect((await page.request.post("/api/v1/functions", { data: { name: fn, runtime: "python", source: "def handle(req):\n    return 'ok'\n" } })).status()).toBe(201);
  expect((await page.request.post(`/api/v1/functions/${fn}/deploy`)).status()).toBe(201);

  for (const path of [`/?q=${fn}`, `/functions/${fn}`, "/functions/new", "/account"]) {
    await page.goto(path);
    await hydrated(page);
    expect(await pageWidth(page), path).toBeLessThanOrEqual(390);
  }

  // Keyboard: the skip link comes first and the focused control is outlined.
  await page.goto(`/functions/${fn}`);
  await hydrated(page);
  await page.keyboard.press("Tab");
  await expect(page.getByRole("link", { name: "Skip to content" })).toBeFocused();
  const outline = await page.getByRole("link", { name: "Skip to content" }).evaluate((el) => getComputedStyle(el).outlineStyle);
  expect(outline).not.toBe("none");

  const admin = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
  await logIn(admin, "admin", "admin-password");
  await admin.goto("/admin");
  await hydrated(admin);
  await expect(admin.getByTestId("admin-instances")).toBeVisible();
  expect(await pageWidth(admin), "/admin").toBeLessThanOrEqual(390);

  expect((await page.request.delete(`/api/v1/functions/${fn}/deploy`)).status()).toBe(204);
});
