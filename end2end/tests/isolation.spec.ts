import { expect, test } from "@playwright/test";
import { hydrated, logIn, run, signUp } from "./helpers";

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

// A page on another port of kubefn's host (here a function's node port, which serves the
// function's own HTML) is the same *site*, so the browser attaches the victim's SameSite=Lax
// cookie to whatever it sends to kubefn. It tries a write through the REST API, a log-out, and
// a call to the victim's private function; kubefn must honour none of them as the victim.
test("a page on another port cannot act as the signed-in user (forged writes and function calls)", async ({ browser, baseURL }) => {
  const attacker = `e2e-csrf-${run}`;
  const victim = `e2e-target-${run}`;
  const lure = `csrf-${run}`;
  const kubefn = new URL(baseURL!).origin;
  const attacks = [
    `fetch("${kubefn}/api/v1/functions/idle/deploy", {method: "POST", mode: "no-cors", credentials: "include"})`,
    `fetch("${kubefn}/fn/${victim}/counter", {method: "POST", mode: "no-cors", credentials: "include", body: "forged"})`,
    `fetch("${kubefn}/api/v1/logout", {method: "POST", mode: "no-cors", credentials: "include"})`,
  ];
  const html =
    `<!doctype html><title>lure</title><script>` +
    `Promise.allSettled([${attacks.join(", ")}]).then(() => { document.title = "done"; });</script>`;
  const attackerPage = await (await browser.newContext()).newPage();
  await signUp(attackerPage, attacker, "e2e-password-9");
  const source = `def handle(event, context):\n    return {'statusCode': 200, 'body': ${JSON.stringify(html)}, 'headers': {'Content-Type': 'text/html'}}\n`;
  expect((await attackerPage.request.post("/api/v1/functions", { data: { name: lure, runtime: "python", source } })).status()).toBe(201);
  const lureInstance = await (await attackerPage.request.post(`/api/v1/functions/${lure}/deploy`)).json();
  let nodePort = "";
  await expect
    .poll(async () => {
      const instance = await (await attackerPage.request.get(`/api/v1/instances/${lureInstance.id}`)).json();
      nodePort = instance.urls?.node_port ?? "";
      return instance.state;
    }, { timeout: 30_000 })
    .toBe("Ready");
  expect(new URL(nodePort).origin).not.toBe(kubefn);

  const victimContext = await browser.newContext();
  const victimPage = await victimContext.newPage();
  await signUp(victimPage, victim, "e2e-password-9");
  const counter = "count = 0\ndef handle(req):\n    global count\n    count += 1\n    return str(count)\n";
  for (const name of ["counter", "idle"]) {
    const registered = await victimPage.request.post("/api/v1/functions", { data: { name, runtime: "python", source: counter, invoke: { access: "owner" } } });
    expect(registered.status(), await registered.text()).toBe(201);
  }
  const counterInstance = await (await victimPage.request.post("/api/v1/functions/counter/deploy")).json();
  await expect
    .poll(async () => (await (await victimPage.request.get(`/api/v1/instances/${counterInstance.id}`)).json()).state, { timeout: 30_000 })
    .toBe("Ready");

  await victimPage.goto(nodePort);
  await expect(victimPage).toHaveTitle("done");

  const me = await victimPage.request.get("/api/v1/me");
  expect(me.status(), "the forged log-out did not end the session").toBe(200);
  const instances = await (await victimPage.request.get("/api/v1/instances")).json();
  expect(instances.map((i: { function: string }) => i.function)).toEqual(["counter"]);
  const count = await victimPage.request.post(`/fn/${victim}/counter`, { data: "mine" });
  expect(await count.text(), "the forged call never reached the private function").toBe("1");
});

// An owner's new version must not reach the instances other users run of their public
// function (with those users' data and secrets) unless those users chose to follow it.
test("another user's instance of a public function stays on its version until they follow the owner", async ({ browser }) => {
  const owner = `e2e-owner-${run}`;
  const user = `e2e-user-${run}`;
  const fn = `shared-${run}`;
  const source = (word: string) => `def handle(req):\n    return '${word} ' + req\n`;
  const ownerPage = await (await browser.newContext()).newPage();
  await signUp(ownerPage, owner, "e2e-password-9");
  const spec = { name: fn, runtime: "python", visibility: "public" };
  expect((await ownerPage.request.post("/api/v1/functions", { data: { ...spec, source: source("one") } })).status()).toBe(201);

  const page = await (await browser.newContext()).newPage();
  await signUp(page, user, "e2e-password-9");
  await page.goto(`/functions/${fn}`);
  await hydrated(page);
  const instance = page.getByTestId("instance");
  await expect(instance.getByTestId("follow-updates")).not.toBeChecked();
  await instance.getByRole("button", { name: "Deploy" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Ready", { timeout: 30_000 });
  await expect(instance.getByTestId("version-policy")).toHaveText("stays on v1");

  // The catalog's list of instances, asked for the function by name: each caller gets their
  // own instances only (the function's owner sees none of this user's), and no more names than
  // a catalog page holds.
  const catalogInstances = (of: typeof page, names: string[]) =>
    of.request.post("/api/my_instances", { form: Object.fromEntries(names.map((name, i) => [`functions[${i}]`, name])) });
  const own = await catalogInstances(page, [fn, "no-such-function"]);
  expect(own.status(), await own.text()).toBe(200);
  expect((await own.json()).map((i: { function: string }) => i.function)).toEqual([fn]);
  expect(await (await catalogInstances(ownerPage, [fn])).json(), "the owner never sees this user's instance").toEqual([]);
  const tooMany = await catalogInstances(page, Array.from({ length: 51 }, (_, i) => `f${i}`));
  expect(tooMany.status()).toBe(422);
  expect((await tooMany.json()).field).toBe("functions");

  const updated = await ownerPage.request.put(`/api/v1/functions/${fn}`, { data: { ...spec, source: source("two") } });
  expect(updated.status(), await updated.text()).toBe(200);
  await expect.poll(async () => (await ownerPage.request.get(`/api/v1/functions/${fn}`)).json().then((f) => f.version)).toBe(2);
  await page.reload();
  await expect(instance.getByTestId("version-policy")).toHaveText(`stays on v1 (${owner} is on v2)`);
  expect(await (await page.request.post(`/fn/${user}/${fn}`, { data: "x" })).text()).toBe("one x");

  await instance.getByTestId("version-policy-change").click();
  await expect(instance.getByTestId("version-policy")).toHaveText(`follows ${owner}'s updates`);
  await expect.poll(async () => (await page.request.post(`/fn/${user}/${fn}`, { data: "x" })).text(), { timeout: 30_000 }).toBe("two x");
});
