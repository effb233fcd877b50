import { expect, test } from "@playwright/test";
import { hydrated, run, signUp } from "./helpers";

test("sign up, register a Python function, see it in the catalog, edit it to version 2", async ({ page }) => {
  const user = `e2e-${run}`;
  const fn = `hello-${run}`;
  // The wasm files the browser fetches: the pages behind the catalog come as their own chunks.
  const wasm: string[] = [];
  page.on("request", (request) => {
    if (request.url().endsWith(".wasm")) wasm.push(new URL(request.url()).pathname);
  });

  await signUp(page, user, "e2e-password-1");
  await expect(page).toHaveURL(/\/$/);
  expect(wasm).toContain("/pkg/kubefn.wasm");
  expect(wasm.filter((path) => path.includes("route_view"))).toEqual([]);

  await page.getByRole("link", { name: "Register a function" }).click();
  await expect(page).toHaveURL(/\/functions\/new$/);
  await hydrated(page);
  expect(wasm.filter((path) => path.includes("route_view"))).toEqual([
    expect.stringContaining("register_function_route_view"),
  ]);
  await page.getByLabel("Name", { exact: true }).fill(fn);
  await page.getByLabel("Runtime").selectOption("python");
  await page.getByLabel("Source").fill("def handle(req):\n    return 'hello ' + req\n");
  await page.getByLabel("Visibility").selectOption("public");
  await page.getByRole("button", { name: "Register" }).click();

  await expect(page).toHaveURL(new RegExp(`/functions/${fn}$`));
  await expect(page.getByTestId("current-version")).toHaveText("1");
  await expect(page.getByTestId("source")).toContainText("return 'hello ' + req");

  // The catalog's name filter (a plain GET form) finds it however many functions there are.
  await page.getByRole("link", { name: "Catalog" }).click();
  await page.getByLabel("Name contains").fill(fn);
  await page.getByRole("button", { name: "Filter" }).click();
  await expect(page).toHaveURL(new RegExp(`\\?q=${fn}$`));
  await expect(page.getByTestId("catalog-range")).toHaveText("1–1 of 1");
  const row = page.locator(`tr[data-function="${fn}"]`);
  await expect(row).toBeVisible();
  await expect(row.locator(".version")).toHaveText("v1");
  await expect(row.getByRole("button", { name: "Deploy" })).toBeEnabled();

  // "Change scaling…" opens the edit form at its scaling inputs; "Edit (new version)" at the top.
  await row.getByRole("link", { name: fn }).click();
  await page.getByRole("link", { name: "Change scaling…" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}/edit#scaling$`));
  await expect(page.getByLabel("Max replicas")).toBeVisible();
  await page.goto(`/functions/${fn}`);
  await page.getByRole("link", { name: "Edit (new version)" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}/edit$`));
  await hydrated(page);
  await page.getByLabel("Source").fill("def handle(req):\n    return 'hello again ' + req\n");
  await page.getByLabel("Max replicas").fill("4");
  await page.getByRole("button", { name: "Save new version" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}$`));
  await expect(page.getByTestId("current-version")).toHaveText("2");
  await expect(page.getByTestId("source")).toContainText("hello again");
  await expect(page.getByTestId("versions").locator("tbody tr")).toHaveCount(2);
  await expect(page.getByTestId("scaling")).toContainText("1–4 replicas");

  // Roll back to version 1 from the versions table.
  await page.getByRole("button", { name: "Make v1 current" }).click();
  await expect(page.getByTestId("current-version")).toHaveText("1");
  await expect(page.getByTestId("source")).not.toContainText("hello again");

  await page.goto(`/?q=${fn}`);
  await expect(page.locator(`tr[data-function="${fn}"] .version`)).toHaveText("v1 (latest v2)");
  await page.goto(`/?q=${fn}-nothing-else`);
  await expect(page.getByText(`No function's name contains “${fn}-nothing-else”.`)).toBeVisible();

  // Unregister, after a change of mind: the function is gone.
  await page.goto(`/functions/${fn}`);
  await hydrated(page);
  await page.getByRole("button", { name: "Unregister…" }).click();
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByRole("button", { name: "Unregister…" }).click();
  await page.getByRole("button", { name: `Yes, unregister ${fn}` }).click();
  await expect(page).toHaveURL(/\/$/);
  expect((await page.request.get(`/api/v1/functions/${fn}`)).status()).toBe(404);
});

test("API tokens: create one on the account page, use it, revoke it", async ({ page, playwright, baseURL }) => {
  const user = `e2e-tok-${run}`;
  await signUp(page, user, "e2e-password-9");
  await page.getByRole("link", { name: "Account" }).click();
  await hydrated(page);
  // The quota, with what this user uses of it: nothing yet, of the default.
  await expect(page.getByTestId("quota").getByRole("row", { name: /^Functions/ }).locator("td")).toHaveText(["0", "100"]);
  await expect(page.getByTestId("quota").getByRole("row", { name: /^CPU/ }).locator("td")).toHaveText(["0 cores", "32 cores"]);
  await page.getByLabel("Token name").fill("laptop");
  await page.getByRole("button", { name: "Create token" }).click();
  const secret = (await page.getByTestId("new-token").textContent())!;
  expect(secret).toMatch(/^kfn_/);
  // A client of its own, without the browser's session cookie.
  const api = await playwright.request.newContext({ baseURL, extraHTTPHeaders: { authorization: `Bearer ${secret}` } });
  const me = await api.get("/api/v1/me");
  expect(await me.json()).toEqual({ name: user, role: "user" });
  await expect(page.locator("table:not([data-testid=quota]) tbody tr", { hasText: "laptop" })).toBeVisible();
  await page.getByRole("button", { name: "Revoke" }).click();
  await expect(page.getByText("No tokens yet.")).toBeVisible();
  expect((await api.get("/api/v1/me")).status()).toBe(401);
  await api.dispose();
});

test("the API reference: Swagger UI shows the OpenAPI document's operations", async ({ page }) => {
  const user = `e2e-api-${run}`;
  await signUp(page, user, "e2e-password-7");
  await page.getByRole("link", { name: "Account" }).click();
  await hydrated(page);
  await page.getByRole("link", { name: "API reference" }).click();
  await expect(page).toHaveURL(/\/api\/docs\/$/);
  // Swagger UI (served by kubefn itself) has read /api/v1/openapi.json and lists its operations.
  await expect(page.locator('[data-path="/api/v1/functions/{name}/deploy"]').first()).toBeVisible();
  await expect(page.getByText("Registers a function as version 1").first()).toBeVisible();
  await expect(page.locator('[data-path="/fn/{user}/{function}/{path}"]').first()).toBeVisible();
  const document = await (await page.request.get("/api/v1/openapi.json")).json();
  expect(document.openapi).toBe("3.1.0");
});

test("secrets on the account page: saved, listed by name only, refused by field, deleted; another user sees none", async ({ page, browser }) => {
  const user = `e2e-sec-${run}`;
  await signUp(page, user, "e2e-password-8");
  await page.getByRole("link", { name: "Account" }).click();
  await hydrated(page);
  const secrets = page.getByRole("region", { name: "Secrets" });
  await expect(secrets.getByText("No secrets yet.")).toBeVisible();
  await secrets.getByLabel("Name").fill("Bad_Name");
  await secrets.getByLabel("Value").fill("x");
  await secrets.getByRole("button", { name: "Save secret" }).click();
  await expect(secrets.locator("#error-name")).toContainText("lowercase letters");
  await secrets.getByLabel("Name").fill("db-password");
  await secrets.getByLabel("Value").fill("e2e-hunter2-value");
  await secrets.getByRole("button", { name: "Save secret" }).click();
  await expect(secrets.getByText("Secret saved.")).toBeVisible();
  await expect(secrets.getByTestId("secrets")).toContainText("db-password");
  await page.reload();
  await expect(page.getByTestId("secrets")).toContainText("db-password");
  expect(await page.content()).not.toContain("e2e-hunter2-value");

  const other = await browser.newPage();
  await signUp(other, `e2e-sec2-${run}`, "e2e-password-9");
  await other.goto("/account");
  await expect(other.getByText("No secrets yet.")).toBeVisible();
  expect((await other.request.get("/api/v1/secrets")).status()).toBe(200);
  expect(await (await other.request.get("/api/v1/secrets")).json()).toEqual([]);
  await other.close();

  await hydrated(page);
  await page.getByTestId("secrets").getByRole("button", { name: "Delete" }).click();
  await expect(page.getByRole("region", { name: "Secrets" }).getByText("No secrets yet.")).toBeVisible();
});

test("invalid input is shown next to its field and nothing is registered", async ({ page }) => {
  const user = `e2e-bad-${run}`;
  await signUp(page, user, "e2e-password-2");

  await page.goto("/functions/new");
  await hydrated(page);
  const rejected = `rejected-${run}`;
  await page.getByLabel("Name", { exact: true }).fill(rejected);
  await page.getByLabel("Min replicas").fill("7");
  await page.getByLabel("CPU request").fill("lots");
  await page.getByRole("button", { name: "Register" }).click();
  await expect(page.locator("#error-scaling-min")).toContainText("must not exceed scaling.max");
  await expect(page.locator("#error-resources-cpu")).toContainText("CPU quantity");
  await expect(page).toHaveURL(/\/functions\/new$/);

  await page.getByLabel("Name", { exact: true }).fill("Not_A_Valid_Name");
  await page.getByLabel("Min replicas").fill("1");
  await page.getByLabel("CPU request").fill("100m");
  await page.getByRole("button", { name: "Register" }).click();
  await expect(page.locator("#error-name")).toContainText("lowercase letters");
  await expect(page.locator("#error-scaling-min")).toHaveCount(0);

  // Nothing was registered: the catalog has no row for either attempt.
  await page.goto("/");
  await expect(page.getByRole("heading", { name: "Functions" })).toBeVisible();
  await expect(page.locator(`tr[data-function="${rejected}"]`)).toHaveCount(0);
  await expect(page.locator('tr[data-function="Not_A_Valid_Name"]')).toHaveCount(0);
});

test("log out and back in; pages need a session", async ({ page }) => {
  const user = `e2e-session-${run}`;
  await signUp(page, user, "e2e-password-3");

  await page.getByRole("button", { name: "Log out" }).click();
  await expect(page.getByRole("link", { name: "Log in" })).toBeVisible();
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);

  await hydrated(page);
  await page.locator("#login-name").fill(user);
  await page.locator("#login-password").fill("wrong-password");
  await page.locator("#login-form").getByRole("button", { name: "Log in" }).click();
  await expect(page.getByText("wrong user name or password")).toBeVisible();
  await page.locator("#login-password").fill("e2e-password-3");
  await page.locator("#login-form").getByRole("button", { name: "Log in" }).click();
  await expect(page.getByTestId("whoami")).toContainText(user);
});
