import { expect, test, type Page } from "@playwright/test";
import { hydrated, run, screenshot, signUp } from "./helpers";

// Prints each request (for the live logs), echoes an `X-Suffix` header and sets one of its own.
const greeter = (greeting: string) =>
  [
    "print('greeter loaded', flush=True)",
    "def handle(event, context):",
    "    body = event.body.decode()",
    "    print('got ' + body, flush=True)",
    `    return {"statusCode": 200, "body": "${greeting} " + body + event.headers.get("x-suffix", ""), "headers": {"X-Served-By": "greeter"}}`,
    "",
  ].join("\n");

/** Sends `body` from the invoke panel and returns what the panel shows. */
async function invokeFromPanel(page: Page, body: string, headers = "") {
  await page.locator("#invoke-headers").fill(headers);
  await page.locator("#invoke-body").fill(body);
  await page.getByRole("button", { name: "Send" }).click();
}

/** Waits for two answers of the server function the page polls at `path` (the first may be under way). */
async function nextPolls(page: Page, path: string) {
  for (let i = 0; i < 2; i++) {
    await page.waitForResponse((response) => new URL(response.url()).pathname.startsWith(path) && !new URL(response.url()).pathname.startsWith(`${path}s`));
  }
}

/** The number of points the chart titled `title` draws. */
async function chartPoints(page: Page, title: string) {
  return Number(await page.locator(`figure[data-chart="${title}"] svg`).getAttribute("data-points"));
}

test("deploy from the catalog, invoke, logs, charts, scale, pause, update, roll back and delete", async ({ page, context }) => {
  const user = `e2e-inst-${run}`;
  const fn = `greeter-${run}`;
  await signUp(page, user, "e2e-password-4");

  // Registered over the REST API with the browser's own session.
  const registered = await page.request.post("/api/v1/functions", {
    // No CPU target: the replica count is the user's alone (with one, the autoscaler would
    // take a hand-set count back down at its next decision, as Kubernetes' HPA does).
    data: { name: fn, runtime: "python", source: greeter("hello"), visibility: "private", scaling: { min: 1, max: 5, target_cpu_percent: null } },
  });
  expect(registered.status()).toBe(201);

  // Deploy from the catalog (filtered by name, so earlier runs' functions cannot push it off
  // page 1); the function page then shows it coming up without a reload.
  await page.goto(`/?q=${fn}`);
  await hydrated(page);
  await page.locator(`tr[data-function="${fn}"]`).getByRole("button", { name: "Deploy" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}$`));
  const instance = page.getByTestId("instance");
  await expect(instance.getByTestId("instance-state")).toHaveText("Ready", { timeout: 30_000 });
  await expect(instance.getByTestId("replicas")).toHaveText("1 of 1 ready");
  await expect(instance.getByTestId("deploy-progress")).toHaveCount(0);
  await instance.locator("details.events summary").click();
  await expect(instance.locator("details.events")).toContainText("serving with 1 ready replica");

  // The addresses, each with a copy button that puts it on the clipboard.
  const nodePort = await instance.getByTestId("url-node-port").locator("code").textContent();
  expect(nodePort).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  const gateway = instance.getByTestId("url-gateway");
  await expect(gateway.locator("code")).toHaveText(new RegExp(`^http://127\\.0\\.0\\.1:\\d+/fn/${user}/${fn}$`));
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  await gateway.getByRole("button", { name: "Copy the gateway address" }).click();
  await expect(gateway.getByRole("button", { name: "Copy the gateway address" })).toHaveText("Copied");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(await gateway.locator("code").textContent());

  // The node port answers directly.
  const answer = await page.request.post(nodePort!, { data: "ada", headers: { "content-type": "text/plain" } });
  expect(await answer.text()).toBe("hello ada");

  // The invoke panel: headers in, status, headers, body and duration out; a bad header line
  // is refused with the field named.
  await invokeFromPanel(page, "grace", "X-Suffix: !");
  await expect(page.getByTestId("invoke-status")).toHaveText("200");
  await expect(page.getByTestId("invoke-body")).toHaveText("hello grace!");
  await expect(page.getByTestId("invoke-duration")).toHaveText(/^\d+ ms$/);
  await page.getByTestId("invoke-headers").locator("summary").click();
  await expect(page.getByTestId("invoke-headers")).toContainText("x-served-by: greeter");
  await invokeFromPanel(page, "grace", "no colon here");
  await expect(page.locator("#error-headers")).toContainText("line 1");

  // Logs: the line the function printed appears live; filter, follow off and on, download.
  const logs = page.getByTestId("logs");
  await expect(page.getByTestId("logs-live")).toHaveText("(live)");
  await expect(logs).toContainText("greeter loaded");
  await expect(logs).toContainText("got grace");
  await expect(logs.locator(".replica").first()).toHaveText(/^v1-r\d$/);
  await page.getByPlaceholder("Filter lines").fill("got grace");
  await expect(logs.locator(".line")).toHaveCount(1);
  await expect(page.getByTestId("logs-count")).toHaveText(/^1 of \d+ lines$/);
  const download = await page.getByTestId("logs-download").getAttribute("href");
  expect(decodeURIComponent(download!.replace("data:text/plain;charset=utf-8,", ""))).toContain("stdout got grace");
  await page.getByPlaceholder("Filter lines").fill("");
  await page.getByRole("checkbox", { name: "Follow" }).uncheck();
  await expect(page.getByTestId("logs-live")).toHaveText("(not following)");
  await page.getByRole("checkbox", { name: "Auto-scroll" }).uncheck();
  await expect(page.getByRole("checkbox", { name: "Auto-scroll" })).not.toBeChecked();
  await page.getByRole("checkbox", { name: "Follow" }).check();
  await expect(page.getByTestId("logs-live")).toHaveText("(live)");
  await expect(logs).toContainText("got grace");

  // Charts: some load, then the requests chart gains points; the window picker switches.
  const usage = page.getByTestId("usage");
  await expect(usage.locator("figure.chart")).toHaveCount(6);
  const before = await chartPoints(page, "Requests");
  for (let i = 0; i < 20; i++) {
    await page.request.post(`/fn/${user}/${fn}`, { data: `load ${i}`, headers: { "content-type": "text/plain" } });
  }
  await expect.poll(() => chartPoints(page, "Requests"), { timeout: 30_000 }).toBeGreaterThan(before);
  await expect(usage.locator('figure[data-chart="Requests"] .legend')).not.toContainText("–");
  await usage.getByRole("button", { name: "15 min", exact: true }).click();
  await expect(usage.getByRole("button", { name: "15 min", exact: true })).toHaveAttribute("aria-pressed", "true");
  await expect(usage.getByRole("button", { name: "5 min", exact: true })).toHaveAttribute("aria-pressed", "false");
  await usage.getByRole("button", { name: "5 min", exact: true }).click();
  await expect(usage.getByRole("button", { name: "5 min", exact: true })).toHaveAttribute("aria-pressed", "true");

  // Scale by hand: the replica table, the logs' replica tags and a scaling event on the chart.
  // The panel polls its instance, yet a number half-typed survives the polls (nothing changed).
  await instance.getByLabel("Replicas").fill("2");
  await nextPolls(page, "/api/my_instance");
  await expect(instance.getByLabel("Replicas")).toHaveValue("2");
  await expect(instance.getByLabel("Replicas")).toBeFocused();
  await instance.getByRole("button", { name: "Scale" }).click();
  await expect(instance.getByTestId("replicas")).toHaveText("2 of 2 ready", { timeout: 30_000 });
  await expect(instance.getByTestId("replica-table").locator("tbody tr")).toHaveCount(2);
  await expect(logs.locator(".replica", { hasText: "v1-r1" }).first()).toBeVisible();
  await expect(usage.locator('figure[data-chart="Replicas"] line.marker').first()).toBeAttached({ timeout: 30_000 });
  await screenshot(page, "function", { fullPage: true });

  await instance.getByRole("button", { name: "Pause" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Paused");
  await expect(instance.getByTestId("replicas")).toHaveText("0 of 0 ready");
  await instance.getByRole("button", { name: "Resume" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Ready", { timeout: 30_000 });
  await expect(instance.getByTestId("replicas")).toHaveText("2 of 2 ready");

  // Update through the edit form: the new version rolls out to the running instance.
  await page.goto(`/functions/${fn}/edit`);
  await hydrated(page);
  await page.locator("#f-source").fill(greeter("v2"));
  await page.getByRole("button", { name: "Save new version" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}$`));
  await expect(page.getByTestId("current-version")).toHaveText("2");
  await expect(logs.locator(".replica", { hasText: "v2-r0" }).first()).toBeVisible({ timeout: 30_000 });
  await expect.poll(async () => (await page.request.post(nodePort!, { data: "bo" })).text(), { timeout: 30_000 }).toBe("v2 bo");

  // Roll back from the versions table: v1 answers again.
  await page.getByRole("button", { name: "Make v1 current" }).click();
  await expect(page.getByTestId("current-version")).toHaveText("1");
  await expect.poll(async () => (await page.request.post(nodePort!, { data: "bo" })).text(), { timeout: 30_000 }).toBe("hello bo");

  // Pause, resume and delete from the catalog.
  await page.goto(`/?q=${fn}`);
  await hydrated(page);
  const row = page.locator(`tr[data-function="${fn}"]`);
  await expect(row.getByTestId("catalog-state")).toHaveText("Ready");
  await expect(row.getByTestId("url-node-port")).toContainText(nodePort!);
  await row.getByRole("button", { name: "Pause" }).click();
  await expect(row.getByTestId("catalog-state")).toHaveText("Paused");
  await row.getByRole("button", { name: "Resume" }).click();
  await expect(row.getByRole("button", { name: "Pause" })).toBeVisible();
  // The catalog follows the state by itself: no reload.
  await expect(row.getByTestId("catalog-state")).toHaveText("Ready", { timeout: 30_000 });
  await screenshot(page, "catalog");
  await row.getByRole("button", { name: "Delete…" }).click();
  await row.getByRole("button", { name: "Cancel" }).click();
  await expect(row.getByTestId("catalog-state")).toBeVisible();
  await row.getByRole("button", { name: "Delete…" }).click();
  // An open confirmation stays open while the catalog polls.
  await nextPolls(page, "/api/my_instances");
  await row.getByRole("button", { name: "Yes, delete" }).click();
  await expect(row.getByRole("button", { name: "Deploy" })).toBeVisible();
  await expect(row.getByTestId("catalog-state")).toHaveCount(0);

  // Nothing is left: no instance in the API, and the node port no longer answers.
  const mine = await page.request.get("/api/v1/instances");
  expect((await mine.json()).filter((i: { function: string }) => i.function === fn)).toEqual([]);
  await expect.poll(async () => {
    try {
      await page.request.post(nodePort!, { data: "x", timeout: 2_000 });
      return "answered";
    } catch {
      return "refused";
    }
  }).toBe("refused");
  await page.goto(`/functions/${fn}`);
  await expect(page.getByTestId("instance")).toContainText("Not deployed");
});

test("a function that cannot start shows why, and deploying again retries it", async ({ page }) => {
  const user = `e2e-fail-${run}`;
  const fn = `broken-${run}`;
  await signUp(page, user, "e2e-password-5");
  const registered = await page.request.post("/api/v1/functions", {
    data: { name: fn, runtime: "python", source: "def handle(req)\n    return req\n" },
  });
  expect(registered.status()).toBe(201);

  await page.goto(`/functions/${fn}`);
  await hydrated(page);
  const instance = page.getByTestId("instance");
  await instance.getByRole("button", { name: "Deploy" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Failed", { timeout: 60_000 });
  await expect(instance.getByTestId("instance-message")).toContainText("syntax error");
  // The progress shows where it stopped, and the events are open with the failure in words.
  await expect(instance.getByTestId("deploy-progress").locator(".failed")).toHaveText("Deploying");
  await expect(instance.locator("details.events")).toHaveAttribute("open", "");
  await expect(instance.locator("details.events")).toContainText("cannot start");
  await expect(page.getByTestId("logs")).toContainText("syntax error");
  // "Deploy again" retries the version (and fails again, saying so); then delete it here.
  const failures = instance.locator("details.events li", { hasText: "cannot start" });
  const before = await failures.count();
  await instance.getByRole("button", { name: "Deploy again" }).click();
  await expect.poll(() => failures.count(), { timeout: 60_000 }).toBeGreaterThan(before);
  await expect(instance.getByTestId("instance-state")).toHaveText("Failed");
  await instance.getByRole("button", { name: "Delete…" }).click();
  await instance.getByRole("button", { name: "Yes, delete my instance" }).click();
  await expect(instance).toContainText("Not deployed");
});

test("cron triggers: a bad schedule is refused with the field named, a good one is listed and deleted", async ({ page }) => {
  const user = `e2e-cron-${run}`;
  const fn = `ticker-${run}`;
  await signUp(page, user, "e2e-password-6");
  const registered = await page.request.post("/api/v1/functions", { data: { name: fn, runtime: "python", source: "def handle(req):\n    return 'tick'\n" } });
  expect(registered.status()).toBe(201);
  await page.goto(`/functions/${fn}`);
  await hydrated(page);
  const triggers = page.getByTestId("triggers");
  await expect(triggers).toContainText("No triggers yet.");

  await triggers.getByLabel("Schedule").fill("every minute");
  await triggers.getByRole("button", { name: "Add trigger" }).click();
  await expect(triggers.locator("#error-schedule")).toBeVisible();
  await expect(triggers).toContainText("No triggers yet.");

  await triggers.getByLabel("Schedule").fill("*/5 * * * *");
  await triggers.getByLabel("Path").fill("/report");
  await triggers.getByRole("button", { name: "Add trigger" }).click();
  const table = triggers.getByTestId("trigger-table");
  await expect(table.locator("tbody tr")).toHaveCount(1);
  await expect(table).toContainText("*/5 * * * *");
  await expect(table).toContainText("POST /report");
  await expect(table).toContainText("not yet");

  await table.getByRole("button", { name: "Delete…" }).click();
  await table.getByRole("button", { name: "Yes, delete trigger" }).click();
  await expect(triggers).toContainText("No triggers yet.");
});
