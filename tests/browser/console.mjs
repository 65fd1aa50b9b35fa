// Drives the Switchboard console in headless Chromium for tests/test_console.py.
// Usage: node console.mjs <base url> <screenshot dir>
// Reads one JSON command per line on stdin and answers one JSON line on stdout:
//   {"do": "signin", "key": "..."}                -> {"ok": true, "state": {...}}
//   {"do": "refresh"}                              -> {"ok": true, "state": {...}}
//   {"do": "create", "tenant": "...", "agents": "...", "admin": false} -> {"ok": true, "state"}
//   {"do": "revoke", "keyId": "..."}               -> {"ok": true, "state": {...}}
//   {"do": "decide", "tool": "...", "button": "approve"|"deny"} -> {"ok": true, "state": {...}}
//   {"do": "screenshot", "name": "..."}            -> {"ok": true, "path": "..."}
//   {"do": "close"}
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import path from "node:path";

const [base, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
const problems = [];
page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
page.on("dialog", (d) => d.accept());
await page.goto(`${base}/console/`);

async function loaded(since) {
  await page.waitForFunction((t) => Number(document.body.dataset.loaded || 0) > t, since,
                             { timeout: 15000 });
}

async function state() {
  return page.evaluate(() => {
    const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map(
      (tr) => [...tr.cells].map((td) => td.textContent));
    const text = (id) => document.getElementById(id).textContent;
    return {
      signedIn: !document.getElementById("console").hidden,
      signinError: text("signin-error"),
      error: text("error"),
      usage: rows("usage-table"),
      buckets: Number(document.getElementById("chart").dataset.buckets || 0),
      bars: document.querySelectorAll("#chart rect").length,
      keys: rows("keys-table"),
      targets: rows("targets-table"),
      calls: rows("calls-table"),
      approvals: rows("approvals-table"),
      approvalsNote: text("approvals-note"),
      secret: document.getElementById("secret").hidden ? "" : text("secret-value"),
      csp: document.querySelector("meta[http-equiv]") ? "meta" : "header",
    };
  });
}

async function now() {
  return page.evaluate(() => Number(document.body.dataset.loaded || 0));
}

const commands = {
  async signin({ key }) {
    const since = await now();
    await page.evaluate(() => { document.getElementById("signin-error").textContent = ""; });
    await page.fill("#key", key);
    await page.click("#signin-form button");
    await Promise.race([
      loaded(since),
      page.waitForFunction(() => document.getElementById("signin-error").textContent !== "",
                           null, { timeout: 15000 }),
    ]);
    return { state: await state() };
  },
  async refresh() {
    const since = await now();
    await page.click("#refresh");
    await loaded(since);
    return { state: await state() };
  },
  async create({ tenant, agents, admin }) {
    await page.fill("#new-tenant", tenant);
    await page.fill("#new-agents", agents || "");
    if (admin) await page.check("#new-admin");
    await page.click("#create-form button");
    await page.waitForFunction(() => !document.getElementById("secret").hidden
                               || document.getElementById("error").textContent !== "",
                               null, { timeout: 15000 });
    return { state: await state() };
  },
  async revoke({ keyId }) {
    await page.click(`tr[data-key-id="${keyId}"] button.revoke`);
    await page.waitForSelector(`tr[data-key-id="${keyId}"] td.state-revoked`, { timeout: 15000 });
    return { state: await state() };
  },
  async decide({ tool, button }) {
    const row = page.locator("#approvals-table tbody tr", { hasText: tool });
    await row.locator(`button.${button}`).click();
    await page.waitForFunction((t) => ![...document.querySelectorAll("#approvals-table tbody tr")]
      .some((tr) => tr.textContent.includes(t)), tool, { timeout: 15000 });
    return { state: await state() };
  },
  async screenshot({ name }) {
    const file = path.join(shots, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    return { path: file };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  if (command.do === "close") break;
  try {
    const result = await commands[command.do](command);
    process.stdout.write(JSON.stringify({ ok: true, problems, ...result }) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ ok: false, problems, error: String(error) }) + "\n");
  }
  problems.length = 0;  // each answer reports what happened during its own command
}
await browser.close();
