import { expect, test } from "@playwright/test";
import { hydrated, run, signUp } from "./helpers";

test("deploy from the catalog, invoke, watch logs, scale, pause, resume, update and delete", async ({ page }) => {
  const user = `e2e-inst-${run}`;
  const fn = `greeter-${run}`;
  await signUp(page, user, "e2e-password-4");

  // Registered over the REST API with the browser's own session.
  const source = "import os\nprint('greeter loaded', flush=True)\ndef handle(req):\n    return 'hello ' + req\n";
  const registered = await page.request.post("/api/v1/functions", {
    data: { name: fn, runtime: "python", source, visibility: "private" },
  });
  expect(registered.status()).toBe(201);

  // Filtered by name, so earlier runs' functions on the same server cannot push it off page 1.
  await page.goto(`/?q=${fn}`);
  await hydrated(page);
  const row = page.locator(`tr[data-function="${fn}"]`);
  await row.getByRole("button", { name: "Deploy" }).click();
  await expect(page).toHaveURL(new RegExp(`/functions/${fn}$`));

  const instance = page.getByTestId("instance");
  await expect(instance.getByTestId("instance-state")).toHaveText("Ready", { timeout: 30_000 });
  await expect(instance.getByTestId("replicas")).toHaveText("1 of 1 ready");
  const nodePort = await instance.getByTestId("node-port").textContent();
  expect(nodePort).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

  // The node port answers, and the request shows up in the live logs.
  const answer = await page.request.post(nodePort!, { data: "ada", headers: { "content-type": "text/plain" } });
  expect(await answer.text()).toBe("hello ada");
  // The same through the gateway, from the invoke panel and over HTTP with the session.
  await page.getByLabel("Body").fill("grace");
  await page.getByRole("button", { name: "Send" }).click();
  await expect(page.getByTestId("invoke-status")).toHaveText("200");
  await expect(page.getByTestId("invoke-body")).toHaveText("hello grace");
  const viaGateway = await page.request.post(`/fn/${user}/${fn}`, { data: "bo", headers: { "content-type": "text/plain" } });
  expect(viaGateway.status()).toBe(200);
  expect(await viaGateway.text()).toBe("hello bo");

  const logs = page.getByTestId("logs");
  await expect(page.getByTestId("logs-live")).toHaveText("(live)");
  await expect(logs).toContainText("greeter loaded");
  await expect(logs).toContainText("ready on port");

  await instance.getByLabel("Replicas").fill("2");
  await instance.getByRole("button", { name: "Scale" }).click();
  await expect(instance.getByTestId("replicas")).toHaveText("2 of 2 ready", { timeout: 30_000 });
  await expect(logs.locator(".replica", { hasText: "v1-r1" }).first()).toBeVisible();

  await instance.getByRole("button", { name: "Pause" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Paused");
  await expect(instance.getByTestId("replicas")).toHaveText("0 of 0 ready");
  await instance.getByRole("button", { name: "Resume" }).click();
  await expect(instance.getByTestId("instance-state")).toHaveText("Ready", { timeout: 30_000 });
  await expect(instance.getByTestId("replicas")).toHaveText("2 of 2 ready");

  // A new version of the function rolls out to the instance on the same node port.
  const edited = await page.request.put(`/api/v1/functions/${fn}`, {
    data: { name: fn, runtime: "python", source: "def handle(req):\n    return 'v2 ' + req\n", visibility: "private" },
  });
  expect(edited.status()).toBe(200);
  await expect(logs.locator(".replica", { hasText: "v2-r0" }).first()).toBeVisible({ timeout: 30_000 });
  await expect
    .poll(async () => (await page.request.post(nodePort!, { data: "bo", headers: { "content-type": "text/plain" } })).text(), {
      timeout: 30_000,
    })
    .toBe("v2 bo");

  await instance.getByRole("button", { name: "Delete…" }).click();
  await instance.getByRole("button", { name: "Yes, delete my instance" }).click();
  await expect(instance.getByRole("button", { name: "Deploy" })).toBeVisible();
  await expect(instance).toContainText("Not deployed");
  await page.goto(`/?q=${fn}`);
  await expect(page.locator(`tr[data-function="${fn}"]`).getByRole("button", { name: "Deploy" })).toBeVisible();
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
  await expect(page.getByTestId("logs")).toContainText("syntax error");
  await expect(instance.getByRole("button", { name: "Deploy again" })).toBeVisible();
});
