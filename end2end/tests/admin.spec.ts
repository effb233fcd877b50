import { expect, test } from "@playwright/test";
import { hydrated, logIn, run, screenshot, signUp } from "./helpers";

// run.sh starts kubefn with this admin (KUBEFN_ADMIN).
const ADMIN = { name: "admin", password: "admin-password" };

test("an admin sees everyone's instances and usage; a plain user sees none of another's", async ({ browser }) => {
  const owner = `e2e-own-${run}`;
  const other = `e2e-other-${run}`;
  const fn = `private-${run}`;

  // The owner deploys a private function and calls it once.
  const ownerPage = await (await browser.newContext()).newPage();
  await signUp(ownerPage, owner, "e2e-password-7");
  expect((await ownerPage.request.post("/api/v1/functions", { data: { name: fn, runtime: "python", source: "def handle(req):\n    print('secret line', flush=True)\n    return 'ok'\n" } })).status()).toBe(201);
  const deployed = await ownerPage.request.post(`/api/v1/functions/${fn}/deploy`);
  expect(deployed.status()).toBe(201);
  const instanceId: string = (await deployed.json()).id;
  await expect.poll(async () => (await ownerPage.request.post(`/fn/${owner}/${fn}`, { data: "x" })).status(), { timeout: 30_000 }).toBe(200);

  // Another plain user: no Admin link, the dashboard refuses, and the owner's instance, logs
  // and usage are not found (not even acknowledged to exist).
  const otherPage = await (await browser.newContext()).newPage();
  await signUp(otherPage, other, "e2e-password-8");
  await expect(otherPage.getByRole("link", { name: "Admin" })).toHaveCount(0);
  await otherPage.goto("/admin");
  await expect(otherPage.getByRole("alert")).toContainText("Not allowed.");
  await expect(otherPage.getByTestId("admin-instances")).toHaveCount(0);
  expect((await otherPage.request.get("/api/v1/admin/usage")).status()).toBe(403);
  for (const path of [`/api/v1/instances/${instanceId}`, `/api/v1/instances/${instanceId}/logs`, `/api/v1/instances/${instanceId}/usage`]) {
    expect((await otherPage.request.get(path)).status(), path).toBe(404);
  }
  expect((await otherPage.request.get("/api/v1/instances")).ok()).toBe(true);
  expect(await (await otherPage.request.get("/api/v1/instances")).json()).toEqual([]);
  expect((await otherPage.request.post(`/api/v1/instances/${instanceId}/pause`)).status()).toBe(404);
  await otherPage.goto(`/?q=${fn}`);
  await expect(otherPage.locator(`tr[data-function="${fn}"]`)).toHaveCount(0);
  await otherPage.goto(`/functions/${fn}`);
  await expect(otherPage.getByRole("alert")).toContainText("Not found.");

  // The admin: the link, every user, the owner's instance, its usage and health.
  const adminPage = await (await browser.newContext()).newPage();
  await logIn(adminPage, ADMIN.name, ADMIN.password);
  await adminPage.getByRole("link", { name: "Admin" }).click();
  await expect(adminPage).toHaveURL(/\/admin$/);
  await hydrated(adminPage);
  const instances = adminPage.getByTestId("admin-instances");
  const ownerRow = instances.locator("tbody tr", { hasText: owner });
  await expect(ownerRow).toContainText(fn);
  await expect(ownerRow).toContainText("Ready");
  await expect(ownerRow).toContainText(`/fn/${owner}/${fn}`);
  const users = adminPage.getByTestId("admin-users");
  await expect(users.locator("tbody tr", { hasText: owner })).toContainText("1 of 1");
  await expect(users.locator("tbody tr", { hasText: other })).toBeVisible();
  await expect(adminPage.getByTestId("health")).toContainText("local");
  await expect(adminPage.getByTestId("health")).toContainText("answers");
  await expect(adminPage.getByTestId("health")).toContainText("warm pool");
  await expect(adminPage.getByTestId("admin-totals")).toContainText("Instances");

  // Usage reaches the dashboard once the owner's calls are sampled.
  for (let i = 0; i < 10; i++) {
    await ownerPage.request.post(`/fn/${owner}/${fn}`, { data: "x" });
  }
  await expect
    .poll(async () => Number(await adminPage.getByTestId("admin-functions").locator("tbody tr", { hasText: fn }).locator("td").nth(5).textContent()), { timeout: 30_000 })
    .toBeGreaterThan(0);
  await expect(adminPage.locator('figure[data-chart="Requests"] svg')).not.toHaveAttribute("data-points", "0");

  // Sortable: a header sorts its column, a second click reverses it.
  const header = users.getByRole("columnheader", { name: "User" });
  await header.getByRole("button").click();
  await expect(header).toHaveAttribute("aria-sort", "ascending");
  const ascending = await users.locator("tbody tr td:first-child").allTextContents();
  expect(ascending).toEqual([...ascending].sort());
  await header.getByRole("button").click();
  await expect(header).toHaveAttribute("aria-sort", "descending");
  expect(await users.locator("tbody tr td:first-child").allTextContents()).toEqual([...ascending].reverse());
  // The dashboard refreshes every few seconds; the chosen order survives it.
  const rendered = await adminPage.getByTestId("admin-everyone").getAttribute("data-until");
  await expect(adminPage.getByTestId("admin-everyone")).not.toHaveAttribute("data-until", rendered!, { timeout: 20_000 });
  await expect(header).toHaveAttribute("aria-sort", "descending");
  await expect.poll(() => users.locator("tbody tr td:first-child").allTextContents()).toEqual([...ascending].reverse());

  // The admin can also read the owner's logs and usage over the API.
  expect((await adminPage.request.get(`/api/v1/instances/${instanceId}/usage`)).status()).toBe(200);
  // The shortest window spreads this short test's samples over the charts' width.
  await adminPage.getByRole("button", { name: "5 min", exact: true }).click();
  await expect(adminPage.getByRole("button", { name: "5 min", exact: true })).toHaveAttribute("aria-pressed", "true");
  await expect(adminPage.getByTestId("admin-users").locator("tbody tr", { hasText: owner })).toBeVisible();
  await screenshot(adminPage, "admin", { fullPage: true });
  await screenshot(adminPage, "admin-dark", { dark: true });

  expect((await ownerPage.request.delete(`/api/v1/instances/${instanceId}`)).status()).toBe(204);
});

test("an admin sets a user's quota on the dashboard, and the user's next function past it is refused by name", async ({ browser }) => {
  const user = `e2e-quota-${run}`;
  const userPage = await (await browser.newContext()).newPage();
  await signUp(userPage, user, "e2e-password-7");

  const adminPage = await (await browser.newContext()).newPage();
  await logIn(adminPage, ADMIN.name, ADMIN.password);
  await adminPage.goto("/admin");
  await hydrated(adminPage);
  const editor = adminPage.getByTestId("quota-editor");
  await editor.getByLabel("User").fill(user);
  await editor.getByLabel("Functions").fill("1");
  await editor.getByLabel("CPU").fill("lots");
  await editor.getByRole("button", { name: "Save quota" }).click();
  await expect(editor.locator("#error-cpu")).toContainText("cpu must be a quantity such as 8 or 500m");
  await editor.getByLabel("CPU").fill("2");
  await editor.getByRole("button", { name: "Save quota" }).click();
  await expect(editor.getByRole("status")).toContainText(`Saved. ${user}'s quota and use:`);
  await expect(editor.getByTestId("quota").getByRole("row", { name: /^Functions/ }).locator("td")).toHaveText(["0", "1"]);
  await expect(editor.getByTestId("quota").getByRole("row", { name: /^CPU/ }).locator("td")).toHaveText(["0 cores", "2 cores"]);

  const first = await userPage.request.post("/api/v1/functions", { data: { name: `q1-${run}`, runtime: "python", source: "def handle(req):\n    return req\n" } });
  expect(first.status(), await first.text()).toBe(201);
  const second = await userPage.request.post("/api/v1/functions", { data: { name: `q2-${run}`, runtime: "python", source: "def handle(req):\n    return req\n" } });
  expect(second.status()).toBe(403);
  expect((await second.json()).field).toBe("quota.functions");
});
