// The web dashboard in headless Chromium, against the real `gleitzeit serve`
// with API keys on. Run by crates/cli/tests/web_dashboard.rs, which passes:
//   GLEITZEIT_BIN   the binary under test
//   PLAYWRIGHT_DIR  folder whose node_modules holds playwright-core
//   CHROMIUM        the browser (Debian's /usr/bin/chromium)
//   WORK_DIR        an empty folder for the server's home
//   SCREENSHOT_DIR  where the page screenshots go
//   GLEITZEIT_TEST_CONFIG  the server's config (an LLM endpoint: the Ollama double)
// Every check that fails throws; the process exits 1 with the reason.

import { spawn, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { createWriteStream, mkdirSync } from "node:fs";
import path from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BIN = env("GLEITZEIT_BIN");
const WORK = env("WORK_DIR");
const SHOTS = env("SCREENSHOT_DIR");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const require = createRequire(path.join(env("PLAYWRIGHT_DIR"), "package.json"));
const { chromium } = require("playwright-core");
mkdirSync(SHOTS, { recursive: true });

const results = [];
function log(text) {
  console.log(`[dashboard] ${text}`);
}
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}
async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push([name, true]);
    log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push([name, false]);
    log(`FAIL ${name}: ${e.stack || e}`);
    throw e;
  }
}

// ------------------------------------------------------------- the server

function serverEnv() {
  const vars = { ...process.env, GLEITZEIT_HOME: WORK, NO_COLOR: "1", GLEITZEIT_PORT: "1" };
  for (const k of ["GLEITZEIT_CONFIG", "GLEITZEIT_BACKEND", "GLEITZEIT_DB", "GLEITZEIT_SQLITE_PATH",
    "GLEITZEIT_HOST", "GLEITZEIT_SERVER", "GLEITZEIT_HUB_URL", "GLEITZEIT_API_KEY"]) delete vars[k];
  return vars;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let server = null;
function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["--config", env("GLEITZEIT_TEST_CONFIG"), "serve", "--host", "127.0.0.1", "--port", String(port)], {
      env: serverEnv(), cwd: WORK, stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}\n${err}`)), 60000);
    child.stderr.pipe(createWriteStream(path.join(WORK, "server.log"), { flags: "a" }));
    child.stderr.on("data", (d) => (err = (err + d).slice(-4000)));
    child.stdout.on("data", (d) => {
      out += d;
      if (/listening on http:\/\//.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening:\n${out}\n${err}`));
    });
  });
}

function killServer() {
  return new Promise((resolve) => {
    // A killed child has a signalCode and no exitCode.
    if (!server || server.exitCode !== null || server.signalCode !== null) return resolve();
    server.once("exit", () => resolve());
    server.kill("SIGKILL");
  });
}

// ---------------------------------------------------------------- the API

let BASE;
let KEY;
async function api(pathname, options = {}) {
  const r = await fetch(BASE + pathname, {
    ...options,
    headers: { Authorization: `Bearer ${KEY}`, ...(options.headers || {}) },
  });
  const body = await r.json();
  if (!r.ok) throw new Error(`${pathname}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}
async function submit(workflow) {
  const body = typeof workflow === "string" ? workflow : JSON.stringify(workflow);
  return (await api("/api/v1/workflows", { method: "POST", body })).workflow_id;
}

// ---------------------------------------------------------------- the test

// A diamond plus a tail: numbers → (total, squares) → report; and an
// independent function task, so the graph has three layers and a lone node.
const FORM_YAML = `name: "Browser test"
tasks:
  - id: numbers
    method: python/execute
    parameters:
      code: |
        result = list(range(1, 11))
  - id: total
    method: python/execute
    dependencies: [numbers]
    parameters:
      code: |
        result = sum(inputs["numbers"])
      inputs: {numbers: "\${numbers}"}
  - id: squares
    method: python/execute
    dependencies: [numbers]
    parameters:
      code: |
        result = [n * n for n in inputs["numbers"]]
      inputs: {numbers: "\${numbers}"}
  - id: report
    method: python/execute
    dependencies: [total, squares]
    parameters:
      code: |
        result = f"sum={inputs['total']} squares={sum(inputs['squares'])}"
      inputs: {total: "\${total}", squares: "\${squares}"}
  - id: words
    method: function/call
    parameters: {name: count_words, args: {text: "five words in this text"}}
`;

const FAILING_YAML = `name: "Fails on purpose"
tasks:
  - id: flaky
    method: python/execute
    retry: {max_attempts: 2, base_delay: 0.1, jitter: false}
    parameters:
      code: |
        raise ValueError("this task always fails")
`;

const LLM_YAML = `name: "Streams tokens"
tasks:
  - id: answer
    method: llm/chat
    parameters:
      model: llama3.2
      messages: [{role: user, content: "Say something about dashboards."}]
`;

// Three slow steps: long enough to kill the server in the middle.
const SLOW_YAML = `name: "Survives a restart"
tasks:
${[0, 1, 2].map((i) => `  - id: slow${i}
    method: python/execute
${i ? `    dependencies: [slow${i - 1}]\n` : ""}    parameters:
      code: |
        import time
        time.sleep(1.5)
        result = ${i}
`).join("")}`;

function bigWorkflow(n, width) {
  const tasks = [];
  for (let i = 0; i < n; i++) {
    const task = { id: `t${i}`, method: "function/call", parameters: { name: "sum", args: { numbers: [i, 1] } } };
    if (i >= width) task.dependencies = [`t${i - width}`];
    tasks.push(task);
  }
  return { name: `Five thousand tasks`, tasks };
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  log(`screenshot ${file}`);
}

/// How long the page takes to paint a frame: a frozen main thread shows up
/// here as seconds.
async function frameDelay(page) {
  const started = Date.now();
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  return Date.now() - started;
}

async function main() {
  const port = await freePort();
  BASE = `http://127.0.0.1:${port}`;
  const init = JSON.parse(execFileSync(BIN, ["--json", "auth", "init"], { env: serverEnv(), cwd: WORK }).toString());
  KEY = init.key;
  check(KEY && KEY.startsWith("gzt_"), `auth init gave a key: ${JSON.stringify(init)}`);
  server = await startServer(port);
  log(`server at ${BASE}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: Chromium's sandbox needs namespaces it may not get.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  // Every URL the page asks for: no key may ever be in one (proxies log
  // them); streams open with one-time tickets instead.
  const requested = [];
  page.on("request", (r) => requested.push(r.url()));
  page.setDefaultTimeout(20000);
  try {
    await step("asks for an API key and refuses a wrong one", async () => {
      await page.goto(BASE + "/");
      await page.waitForSelector("#key-form");
      await shot(page, "login");
      await page.fill("#api-key", "gzt_not_a_real_key");
      await page.click("#key-form button[type=submit]");
      await page.waitForSelector("#key-form .form-error:not([hidden])");
      await page.fill("#api-key", KEY);
      await page.click("#key-form button[type=submit]");
      await page.waitForSelector("#workflow-table");
    });

    let formId;
    await step("submits a workflow through the form and watches it complete", async () => {
      await page.click("nav a[href='#/submit']");
      await page.waitForSelector("#submit-form");
      await page.fill("#workflow-yaml", "name: broken\ntasks:\n  - id: a\n    method: nope/nothing\n");
      await page.click("#submit-button");
      await page.waitForSelector("#submit-error");
      const error = await page.textContent("#submit-error");
      check(/GZ\d{4}/.test(error) && error.includes("line"), `invalid workflow shows a GZ code and a line: ${error}`);
      await page.fill("#workflow-yaml", FORM_YAML);
      await shot(page, "submit");
      await page.click("#submit-button");
      await page.waitForURL(/#\/workflows\/wf_/);
      formId = decodeURIComponent(page.url().split("#/workflows/")[1]);
      await page.waitForSelector("svg.dag");
      await page.waitForFunction(() => document.querySelector("#workflow-state")?.textContent === "completed", null, { timeout: 60000 });
      const nodes = await page.$$eval("svg.dag .node", (els) => els.map((e) => [e.dataset.task, e.getAttribute("class")]));
      check(nodes.length === 5, `5 nodes drawn: ${JSON.stringify(nodes)}`);
      check(nodes.every(([, c]) => c.includes("state-completed")), `every node completed: ${JSON.stringify(nodes)}`);
      const edges = await page.$$eval("svg.dag .edge", (els) => els.map((e) => `${e.dataset.from}>${e.dataset.to}`).sort());
      check(JSON.stringify(edges) === JSON.stringify(["numbers>squares", "numbers>total", "squares>report", "total>report"]), `edges: ${edges}`);
      // The finished record (duration, usage) is read once the stream says so.
      await page.waitForFunction(() => !document.querySelector("#wf-duration")?.textContent.includes("—"));
      const progress = await page.textContent(".wf-progress");
      check(progress.includes("5/5"), `progress shows 5/5: ${progress}`);
    });

    await step("task details show the result, parameters and timings", async () => {
      await page.click("svg.dag .node[data-task='report']");
      await page.waitForSelector("#task-result");
      const result = await page.textContent("#task-result");
      check(result.includes("sum=55 squares=385"), `report's result: ${result}`);
      const params = await page.textContent("#task-parameters");
      check(params.includes("inputs['total']"), `parameters as written: ${params}`);
      const detail = await page.textContent("#task-detail");
      check(detail.includes("python/execute") && detail.includes("Duration"), `timings: ${detail}`);
      check(page.url().endsWith("/tasks/report"), `task in the URL: ${page.url()}`);
      await shot(page, "workflow");
    });

    await step("a failed task shows its GZ error with the hint and its attempts", async () => {
      const id = await submit(FAILING_YAML);
      await page.goto(`${BASE}/#/workflows/${id}/tasks/flaky`);
      await page.waitForFunction(() => document.querySelector("#workflow-state")?.textContent === "failed", null, { timeout: 60000 });
      await page.waitForSelector("svg.dag .node.state-failed[data-task='flaky']");
      await page.waitForSelector(".task-error");
      const error = await page.textContent(".task-error");
      check(/GZ\d{4}/.test(error) && error.includes("Hint:") && error.includes("always fails"), `error with hint: ${error}`);
      const attempt = await page.textContent("#task-attempt");
      check(attempt.trim() === "2 of 2", `attempts: ${attempt}`);
      await shot(page, "failed-task");
    });

    await step("LLM tokens stream into the page while the task runs", async () => {
      const id = await submit(LLM_YAML);
      await page.goto(`${BASE}/#/workflows/${id}/tasks/answer`);
      // Some tokens, but not all yet: they arrive live, not with the result.
      await page.waitForFunction(() => {
        const text = document.querySelector("#live-output pre.stream")?.textContent || "";
        return text.includes("Gleitzeit") && !text.includes("live.");
      }, null, { timeout: 30000 });
      const node = await page.getAttribute("svg.dag .node[data-task='answer']", "class");
      check(node.includes("state-running"), `the task still runs while tokens arrive: ${node}`);
      await shot(page, "live-tokens");
      await page.waitForFunction(() => document.querySelector("#workflow-state")?.textContent === "completed", null, { timeout: 60000 });
      await page.waitForFunction(() => (document.querySelector("#task-result")?.textContent || "").includes("one by one, live."));
      const detail = await page.textContent("#task-detail");
      check(/Tokens\d+ \(\d+ in, \d+ out\)/.test(detail), `token usage in the details: ${detail}`);
      // A fresh load shows the stored stream too.
      await page.reload();
      await page.waitForFunction(() => (document.querySelector("#live-output pre.stream")?.textContent || "").includes("one by one, live."));
    });

    await step("the list shows workflows with state and progress", async () => {
      await page.click("nav a[href='#/']");
      await page.waitForSelector(`#workflow-table tr[data-id='${formId}']`);
      const row = await page.textContent(`#workflow-table tr[data-id='${formId}']`);
      check(row.includes("completed") && row.includes("5/5"), `list row: ${row}`);
      await shot(page, "workflows");
    });

    await step("providers and nodes pages", async () => {
      await page.click("nav a[href='#/providers']");
      await page.waitForSelector("#providers-table tr[data-protocol='python']");
      const methods = await page.textContent("#providers-table tr[data-protocol='python']");
      check(methods.includes("python/execute") && !methods.includes("[object"), `python methods: ${methods}`);
      await page.click("#check-health");
      await page.waitForSelector("#providers-table tr[data-protocol='python'] .health");
      await shot(page, "providers");
      await page.click("nav a[href='#/nodes']");
      await page.waitForSelector("#nodes-empty");
      await shot(page, "nodes");
    });

    await step("an unknown workflow id is a friendly not-found page", async () => {
      await page.goto(`${BASE}/#/workflows/wf_doesnotexist`);
      await page.waitForSelector(".not-found");
      const text = await page.textContent(".not-found");
      check(text.includes("Workflow not found") && text.includes("wf_doesnotexist"), `not found: ${text}`);
      await shot(page, "not-found");
    });

    await step("a server that goes away: banner, reconnect, live updates resume", async () => {
      const id = await submit(SLOW_YAML);
      await page.goto(`${BASE}/#/workflows/${id}`);
      await page.waitForSelector("svg.dag .node.state-running[data-task='slow0']", { timeout: 30000 });
      await killServer();
      await page.waitForSelector(".banner.error:not([hidden])", { timeout: 15000 });
      await shot(page, "disconnected");
      server = await startServer(port);
      await page.waitForSelector(".banner.ok:not([hidden])", { timeout: 30000 });
      // The restarted server adopts the interrupted workflow; the page must
      // follow it to the end through the resumed event stream.
      await page.waitForFunction(() => document.querySelector("#workflow-state")?.textContent === "completed", null, { timeout: 60000 });
      const states = await page.$$eval("svg.dag .node", (els) => els.map((e) => e.getAttribute("class")));
      check(states.length === 3 && states.every((c) => c.includes("state-completed")), `after restart: ${states}`);
    });

    await step("a 5,000-task workflow is grouped and stays responsive", async () => {
      const id = await submit(bigWorkflow(5000, 100));
      const started = Date.now();
      await page.goto(`${BASE}/#/workflows/${id}`);
      await page.waitForSelector("[data-view='grouped'] .layer-card", { timeout: 30000 });
      const loaded = Date.now() - started;
      check(loaded < 15000, `grouped view within 15 s (took ${loaded} ms)`);
      const cards = await page.$$eval(".layer-card", (els) => els.length);
      check(cards === 50, `50 layer groups: ${cards}`);
      const rows = await page.$$eval(".vrow", (els) => els.length);
      check(rows > 0 && rows < 200, `the task table renders only visible rows: ${rows}`);
      check((await page.$$("svg.dag .node")).length === 0, "no per-node SVG for 5,000 tasks");
      let worst = 0;
      for (let i = 0; i < 10; i++) {
        worst = Math.max(worst, await frameDelay(page));
        await page.waitForTimeout(200);
      }
      check(worst < 1500, `frames keep coming while it runs (worst ${worst} ms)`);
      await page.fill(".task-search", "t4999");
      await page.waitForFunction(() => document.querySelectorAll(".vrow").length === 1);
      await page.click(".vrow[data-task='t4999']");
      await page.waitForSelector("#task-detail .detail-head");
      await page.fill(".task-search", "");
      await page.waitForFunction(() => document.querySelectorAll(".vrow").length > 1);
      await page.evaluate(() => document.querySelector(".vtable").scrollTop = 60000);
      await page.waitForFunction(() => [...document.querySelectorAll(".vrow")].some((r) => r.dataset.task === "t2145"));
      await shot(page, "big-workflow");
      log(`5,000-task page ready in ${loaded} ms; slowest frame ${worst} ms`);
    });

    await step("forgetting the key asks for one again; a revoked key is refused", async () => {
      const made = await api("/api/v1/auth/keys", {
        method: "POST", body: JSON.stringify({ user: "admin", name: "browser" }),
        headers: { "Content-Type": "application/json" },
      });
      await page.goto(`${BASE}/#/`);
      await page.click("#logout");
      await page.waitForSelector("#key-form");
      check(await page.evaluate(() => !sessionStorage.length && !localStorage.length), "the key is gone from storage");
      await page.fill("#api-key", made.key);
      await page.check("#remember");
      await page.click("#key-form button[type=submit]");
      await page.waitForSelector("#workflow-table");
      check(await page.evaluate((k) => localStorage.getItem("gleitzeit.api_key") === k, made.key), "remembered");
      await api(`/api/v1/auth/keys/${made.record.id}/revoke`, { method: "POST" });
      await page.click("nav a[href='#/providers']");
      await page.waitForSelector("#key-form");
    });

    await step("no key in any URL; streams open with one-time tickets; every file has the CSP", async () => {
      const leaked = requested.filter((u) => u.includes("api_key") || u.includes(KEY.slice(4)));
      check(leaked.length === 0, `no key in URLs: ${leaked.join(" ")}`);
      // Streams opened with a key carry a ticket; one opened right after
      // logging out carries nothing (and is refused, GZ4001).
      const streams = requested.filter((u) => u.includes("/api/v1/events?"));
      const ticketed = streams.filter((u) => u.includes("ticket=gzs_"));
      check(ticketed.length >= streams.length - 1 && ticketed.length > 3, `streams use tickets: ${streams.join(" ")}`);
      // A ticket opens one stream only.
      const used = new URL(ticketed[0]).searchParams.get("ticket");
      const again = await fetch(`${BASE}/api/v1/events?ticket=${used}`);
      check(again.status === 401 && (await again.json()).code === "GZ4006", `a used ticket is refused: ${again.status}`);
      const withKey = await fetch(`${BASE}/api/v1/events?api_key=${KEY}`);
      check(withKey.status === 401 && (await withKey.json()).code === "GZ4007", `a key in the URL is refused: ${withKey.status}`);
      const index = (await fetch(`${BASE}/`)).headers.get("content-security-policy");
      for (const file of ["app.js", "dag.js", "style.css", "favicon.svg"]) {
        const csp = (await fetch(`${BASE}/dashboard/${file}`)).headers.get("content-security-policy");
        check(index && csp === index, `/dashboard/${file} has the page's CSP: ${csp}`);
      }
    });

    check(consoleErrors.length === 0, `no page errors: ${consoleErrors.join("\n")}`);
  } finally {
    await browser.close();
    await killServer();
  }
}

main()
  .then(() => {
    log(`screenshots in ${SHOTS}`);
    console.log(`${results.filter((r) => r[1]).length} passed, 0 failed`);
  })
  .catch(async (e) => {
    process.exitCode = 1;
    console.error(`[dashboard] ${e.stack || e}`);
    await killServer();
    process.exit(1);
  });
