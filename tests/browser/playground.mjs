// The playground in a real headless Chromium: the prototype's example shows 3.0, a failing
// snippet shows its error line, "keep state" carries a variable from one run to the next, a bad
// key shows the HTTP error, the key survives a reload in local storage, and the page requests
// nothing from any other origin.
//
// Run by scripts/browser-test.sh, which provides PYEXEC_URL, PYEXEC_KEY, PLAYWRIGHT_DIR (where
// playwright-core is installed), CHROMIUM and ARTIFACTS (where screenshots go).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/browser-test.sh`);
  return value;
};
const base = env("PYEXEC_URL");
const key = env("PYEXEC_KEY");
const artifacts = env("ARTIFACTS");
const { chromium } = createRequire(join(env("PLAYWRIGHT_DIR"), "package.json"))("playwright-core");

const userDataDir = mkdtempSync(join(tmpdir(), "pyexec-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: env("CHROMIUM"),
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
const problems = [];
page.on("console", (message) => {
  if (message.type() === "error") problems.push(`console: ${message.text()}`);
});
page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
page.on("request", (request) => {
  const url = new URL(request.url());
  if (url.protocol !== "data:" && url.origin !== base) problems.push(`request to ${request.url()}`);
});

let step = "opening the page";
try {
  await page.goto(`${base}/`);
  assert.equal(await page.title(), "pyexec playground");

  step = "the prototype's example";
  await page.fill("#api-key", key);
  await page.fill("#code", "result = sum(data['numbers']) / len(data['numbers'])");
  await page.fill("#data", '{"numbers": [1, 2, 3, 4, 5]}');
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "Success" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#result"), "3.0");
  assert.equal(await page.textContent("#executions-left"), "999");
  assert.match(await page.textContent("#fuel"), /^[\d,]+$/);
  assert.match(await page.textContent("#duration"), /^\d+\.\d\d ms$/);
  assert.equal(await page.isVisible("#error-box"), false);
  await page.screenshot({ path: join(artifacts, "playground.png"), fullPage: true });

  step = "the key kept in local storage, not in the URL";
  await page.reload();
  assert.equal(await page.inputValue("#api-key"), key);
  assert.equal(await page.evaluate(() => localStorage.getItem("pyexec.apiKey")), key);
  assert.ok(!page.url().includes(key));

  step = "big numbers and stdout, exactly";
  await page.fill("#code", "print('doubling')\nresult = {'n': data['n'] * 2, 'x': 1.0}");
  await page.fill("#data", '{"n": 12345678901234567890123}');
  await page.keyboard.press("Control+Enter");
  await page.locator("#status").filter({ hasText: "Success" }).waitFor({ timeout: 15_000 });
  assert.equal(
    await page.textContent("#result"),
    '{\n  "n": 24691357802469135780246,\n  "x": 1.0\n}',
  );
  assert.equal(await page.textContent("#stdout"), "doubling\n");

  step = "a failing snippet shows its error line";
  await page.fill("#code", "numbers = [1, 2]\ntotal = 0\nprint('about to fail')\ntotal += numbers[5]\nresult = total");
  await page.fill("#data", "");
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "Failed" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#status"), "Failed: python_exception");
  assert.equal(await page.textContent("#error-summary"), "IndexError: list index out of range");
  assert.equal(await page.textContent("#error-line"), "Line 4total += numbers[5]");
  assert.equal(await page.textContent("#gutter .error-line"), "4");
  assert.ok(await page.isVisible("#error-band"));
  assert.match(await page.textContent("#error-traceback"), /line 4, in <module>/);
  assert.equal(await page.textContent("#stdout"), "about to fail\n");
  assert.equal(await page.textContent("#result"), "");
  await page.click("#error-line button");
  assert.equal(
    await page.evaluate(() => {
      const code = document.getElementById("code");
      return code.value.slice(code.selectionStart, code.selectionEnd);
    }),
    "total += numbers[5]",
  );
  await page.screenshot({ path: join(artifacts, "playground-error.png"), fullPage: true });

  step = "editing clears the error mark";
  await page.locator("#code").press("End");
  await page.locator("#code").pressSequentially(" ");
  assert.equal(await page.locator("#gutter .error-line").count(), 0);
  assert.equal(await page.isVisible("#error-band"), false);

  step = "keep state between runs: a session";
  await page.check("#keep-state");
  await page.fill("#data", "");
  await page.fill("#code", "kept = 41\nresult = 'set'");
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "Success" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#result"), '"set"');
  assert.match(await page.textContent("#session-note"), /^Session ses_\w+ \(rustpython\)/);
  await page.fill("#code", "result = kept + 1");
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "Success" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#result"), "42");
  await page.uncheck("#keep-state");
  await page.fill("#code", "result = 'kept' in globals()");
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "Success" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#result"), "false");
  assert.match(await page.textContent("#session-note"), /^Off/);

  step = "an HTTP error shows its detail";
  await page.fill("#api-key", "sk_test_AbCd1234notarealkey");
  await page.click("#run");
  await page.locator("#status").filter({ hasText: "HTTP 401" }).waitFor({ timeout: 15_000 });
  assert.equal(await page.textContent("#error-summary"), "Invalid API key");

  step = "the page stayed on its own origin";
  // The 401 above is logged by Chromium as a failed resource; nothing else may be.
  const unexpected = problems.filter((p) => !p.includes("401"));
  assert.deepEqual(unexpected, []);
  console.log("playground: all checks passed; screenshots in " + artifacts);
} catch (error) {
  await page.screenshot({ path: join(artifacts, "playground-failure.png"), fullPage: true }).catch(() => {});
  console.error(`playground: failed at "${step}": ${error.message}`);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
