import { expect, test } from "@playwright/test";
import { logIn, run, signUp } from "./helpers";

// run.sh starts kubefn with this admin (KUBEFN_ADMIN).
const ADMIN = { name: "admin", password: "admin-password" };

// A function answers on kubefn's own origin (/fn/...). Its author lures an admin to a page
// whose script would mint an API token as the admin, and whose Set-Cookie would plant a session.
test("a function's page runs no script as kubefn and sets no cookie on its site, even for an admin", async ({ browser }) => {
  const author = `e2e-lure-${run}`;
  const fn = `lure-${run}`;
  const stolen = `stolen-${run}`;
  const html =
    `<!doctype html><title>lure</title><p id="bait">bait</p><script>document.title = "ran"; ` +
    `fetch("/api/v1/tokens", {method: "POST", credentials: "include", headers: {"content-type": "application/json"}, body: JSON.stringify({name: "${stolen}"})});</script>`;
  const source =
    "def handle(event, context):\n" +
    `    return {'statusCode': 200, 'body': ${JSON.stringify(html)}, 'headers': {'Content-Type': 'text/html', 'Set-Cookie': 'kubefn_session=planted; Path=/'}}\n`;

  const authorPage = await (await browser.newContext()).newPage();
  await signUp(authorPage, author, "e2e-password-9");
  const registered = await authorPage.request.post("/api/v1/functions", {
    data: { name: fn, runtime: "python", source, visibility: "public", invoke: { access: "public" } },
  });
  expect(registered.status(), await registered.text()).toBe(201);
  expect((await authorPage.request.post(`/api/v1/functions/${fn}/deploy`)).status()).toBe(201);
  await expect.poll(async () => (await authorPage.request.get(`/fn/${author}/${fn}/`)).status(), { timeout: 30_000 }).toBe(200);

  const adminContext = await browser.newContext();
  const adminPage = await adminContext.newPage();
  await logIn(adminPage, ADMIN.name, ADMIN.password);
  const session = (await adminContext.cookies()).find((c) => c.name === "kubefn_session")?.value;
  expect(session).toBeTruthy();

  const answer = await adminPage.goto(`/fn/${author}/${fn}/`);
  expect(answer?.headers()["content-security-policy"]).toBe("sandbox");
  expect(answer?.headers()["x-content-type-options"]).toBe("nosniff");
  await expect(adminPage.locator("#bait")).toHaveText("bait");
  // Give a script the time it would need, then check it did nothing.
  await adminPage.waitForTimeout(1000);
  expect(await adminPage.title()).toBe("lure");
  const tokens = await (await adminPage.request.get("/api/v1/tokens")).json();
  expect(JSON.stringify(tokens)).not.toContain(stolen);
  expect((await adminContext.cookies()).find((c) => c.name === "kubefn_session")?.value).toBe(session);
  await adminPage.goto("/account");
  await expect(adminPage.getByTestId("whoami")).toContainText(ADMIN.name);
});
