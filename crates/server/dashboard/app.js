// The Gleitzeit dashboard: hash routes (#/, #/workflows/ID[/tasks/TASK],
// #/submit, #/providers, #/nodes), data from /api/v1, live updates from the
// SSE stream. Every text from the server goes in through textContent, never
// innerHTML, so task output cannot inject markup.

import { drawGraph, drawGrouped, GROUP_THRESHOLD } from "./dag.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");

// ------------------------------------------------------- the API's shapes

// What this page reads from the API's answers. Each typedef is named after a
// schema of /api/v1/openapi.json and lists only the fields read here; the
// server's contract test (crates/server/tests/contract.rs) checks every
// typedef against docs/openapi.json, and every read of a value annotated
// with one (`@type`, `@param`) against the typedef.

/**
 * @typedef {Object} WhoAmI
 * @property {string} user
 * @property {string} role
 *
 * @typedef {Object} WorkflowList
 * @property {Array<WorkflowSummaryView>} workflows
 *
 * @typedef {Object} WorkflowSummaryView
 * @property {string} id
 * @property {string} name
 * @property {string} state
 * @property {number} created_ms
 * @property {number|null} finished_ms
 * @property {number} total
 * @property {number} completed
 * @property {number} failed
 *
 * @typedef {Object} EventHead
 * @property {number} latest_event_seq
 *
 * @typedef {Object} EventPage
 * @property {Array<Object>} events
 *
 * @typedef {Object} WorkflowView
 * @property {string} workflow_id
 * @property {string} name
 * @property {string} state
 * @property {number} created_ms
 * @property {number|null} started_ms
 * @property {number|null} finished_ms
 * @property {number|null} duration_ms
 * @property {ErrorView|null} error
 * @property {Usage} usage
 * @property {Array<TaskView>} tasks
 *
 * @typedef {Object} TaskView
 * @property {string} id
 * @property {string} method
 * @property {string} state
 * @property {Array<string>|undefined} dependencies
 *
 * @typedef {Object} Usage
 * @property {number} llm_calls
 * @property {number} prompt_tokens
 * @property {number} completion_tokens
 * @property {number} total_tokens
 *
 * @typedef {Object} ErrorView
 * @property {string} code
 * @property {string} message
 * @property {string} hint
 * @property {string|null} location
 *
 * @typedef {Object} TaskDetail
 * @property {string} id
 * @property {string|null} name
 * @property {string} method
 * @property {string} state
 * @property {number} attempt
 * @property {number|null} started_ms
 * @property {number|null} finished_ms
 * @property {number|null} duration_ms
 * @property {*} result
 * @property {Object|null} record
 * @property {ErrorView|null} error
 * @property {Array<string>|undefined} dependencies
 * @property {*} parameters
 * @property {RetryView|undefined} retry
 * @property {number|null|undefined} timeout
 *
 * @typedef {Object} RetryView
 * @property {number} max_attempts
 *
 * @typedef {Object} StreamTicket
 * @property {string} ticket
 *
 * @typedef {Object} SubmitResponse
 * @property {string} workflow_id
 *
 * @typedef {Object} ErrorBody
 * @property {string} code
 * @property {string} message
 * @property {string} hint
 * @property {Array<DiagnosticBody>|undefined} diagnostics
 *
 * @typedef {Object} DiagnosticBody
 * @property {string} code
 * @property {string} message
 * @property {string|undefined} hint
 * @property {number} line
 * @property {number} column
 *
 * @typedef {Object} ProviderList
 * @property {Array<ProviderEntry>} providers
 *
 * @typedef {Object} ProviderEntry
 * @property {string} protocol
 * @property {Array<Object>} methods
 * @property {ProviderHealthView|undefined} health
 *
 * @typedef {Object} ProviderHealthView
 * @property {string} status
 * @property {string|undefined} reason
 *
 * @typedef {Object} NodeList
 * @property {boolean} scale_out
 * @property {Array<NodeView>} nodes
 *
 * @typedef {Object} NodeView
 * @property {string} id
 * @property {string} host
 * @property {number} pid
 * @property {string} version
 * @property {Object<string, string>} labels
 * @property {boolean} gpu
 * @property {Array<string>} capabilities
 * @property {number} concurrency
 * @property {number} running
 * @property {number} completed
 * @property {number} failed
 * @property {number} heartbeat_ms
 * @property {string} state
 */

// ------------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/// replaceChildren that, like h(), leaves out null/false and flattens lists
/// (the DOM's own would insert the text "null").
function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

const enc = encodeURIComponent;
const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
const json = (v) => JSON.stringify(v, null, 2);
const badge = (state) => h("span", { class: `badge state-${state}` }, state);
const TERMINAL = new Set(["completed", "failed", "skipped", "cancelled"]);

function progressBar(done, failed, total) {
  const pct = total ? Math.round((100 * done) / total) : 0;
  const bar = h("div", { class: "progress", title: `${done}/${total}` },
    h("span", { class: "fill" }),
    h("span", { class: "fail" }));
  bar.children[0].style.width = `${total ? (100 * (done - failed)) / total : 0}%`;
  bar.children[1].style.width = `${total ? (100 * failed) / total : 0}%`;
  return h("div", { class: "progress-wrap" }, bar, h("span", { class: "pct" }, `${done}/${total} (${pct}%)`));
}

// ------------------------------------------------------------- the API key

// sessionStorage by default (gone with the tab); localStorage only when the
// user ticks "remember".
const KEY = "gleitzeit.api_key";
const getKey = () => sessionStorage.getItem(KEY) || localStorage.getItem(KEY) || "";
function setKey(key, remember) {
  sessionStorage.setItem(KEY, key);
  if (remember) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}
function forgetKey() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

class AuthNeeded extends Error {}
class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}
class Offline extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {
    conn.lost();
    throw new Offline(String(e));
  }
  conn.reached();
  let body = null;
  const text = await response.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text };
  }
  if (response.status === 401) throw new AuthNeeded(body && body.message);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -------------------------------------------------------- connection state

// One place knows whether the server answers. While it does not, a banner
// says so and /health is polled with backoff; once it answers again the
// current page re-reads its data and resumes its event stream.
const conn = {
  down: false,
  timer: null,
  delay: 1000,
  lost() {
    if (this.down) return;
    this.down = true;
    this.delay = 1000;
    document.body.classList.add("offline");
    this.poll();
  },
  reached() {
    if (!this.down) return;
    this.down = false;
    clearTimeout(this.timer);
    document.body.classList.remove("offline");
    showBanner("Reconnected to the server.", "ok");
    setTimeout(() => !this.down && hideBanner(), 2500);
    if (view && view.resync) view.resync();
  },
  poll() {
    const seconds = Math.round(this.delay / 1000);
    showBanner(`Cannot reach the Gleitzeit server — reconnecting (next try in ${seconds}s)…`, "error");
    this.timer = setTimeout(async () => {
      try {
        const r = await fetch("/health?quick=true", { cache: "no-store" });
        // Any answer means the server is back, even an unhealthy one.
        if (r.status) return this.reached();
      } catch {
        /* still away */
      }
      this.delay = Math.min(this.delay * 2, 8000);
      this.poll();
    }, this.delay);
  },
};

function showBanner(text, kind) {
  banner.textContent = text;
  banner.className = `banner ${kind}`;
  banner.hidden = false;
}
function hideBanner() {
  banner.hidden = true;
}

// ------------------------------------------------------------ event stream

const EVENT_TYPES = [
  "workflow_started", "workflow_progress", "workflow_completed", "workflow_failed",
  "workflow_cancelled", "task_started", "task_completed", "task_failed", "task_retrying",
  "task_skipped", "task_cancelled", "llm_token", "task_output", "node_joined", "node_left",
];

/// The SSE stream, resumed after the last event seen whenever it is
/// reopened (`after`), so a reconnect neither loses nor repeats events.
/// EventSource cannot send headers and a key must never be in a URL (proxies
/// log URLs): each opening first trades the key for a one-time ticket.
class Live {
  constructor(params, onEvent) {
    this.params = params;
    this.onEvent = onEvent;
    this.last = params.after ?? null;
    this.source = null;
    this.closed = false;
    this.opening = false;
    this.open();
  }
  open() {
    if (this.closed || this.opening) return;
    this.opening = true;
    this.connect()
      .catch(() => {})
      .finally(() => {
        this.opening = false;
      });
  }
  async connect() {
    const q = new URLSearchParams();
    if (this.params.workflow_id) q.set("workflow_id", this.params.workflow_id);
    if (this.params.types) q.set("types", this.params.types);
    if (this.last !== null) q.set("after", String(this.last));
    if (getKey()) {
      /** @type {StreamTicket} */ let answer;
      try {
        answer = await api("/api/v1/stream-tickets", { method: "POST" });
      } catch (e) {
        if (e instanceof AuthNeeded) return render(true);
        // Offline: the connection banner polls and resumes the stream.
        if (e instanceof Offline) return;
        this.retry = Math.min((this.retry || 500) * 2, 15000);
        setTimeout(() => this.open(), this.retry);
        return;
      }
      if (this.closed) return;
      q.set("ticket", answer.ticket);
    }
    const source = new EventSource(`/api/v1/events?${q}`);
    this.source = source;
    const handle = (e) => {
      let event;
      try {
        event = JSON.parse(e.data);
      } catch {
        return;
      }
      // The SSE id, not `seq`: tokens stored in one chunk share a `seq` and
      // have ids `SEQ.INDEX`, so a reconnect resumes inside the chunk.
      if (e.lastEventId) this.last = e.lastEventId;
      else if (event.seq) this.last = event.seq;
      this.onEvent(event);
    };
    for (const t of EVENT_TYPES) source.addEventListener(t, handle);
    source.addEventListener("open", () => {
      this.retry = 0;
      conn.reached();
    });
    source.onerror = () => {
      // Take reconnecting over from the browser: its retries would restart
      // without our `after` once the server is back, and never show a banner.
      source.close();
      if (this.closed || this.source !== source) return;
      this.source = null;
      fetch("/health?quick=true", { cache: "no-store" })
        .then(async () => {
          // The server answers but refused or ended the stream: if the key
          // stopped working (revoked, expired), ask for one instead of
          // retrying into the server's failed-attempt limit.
          if (getKey()) {
            try {
              await api("/api/v1/auth/whoami");
            } catch (e) {
              if (e instanceof AuthNeeded) return render(true);
            }
          }
          this.retry = Math.min((this.retry || 500) * 2, 15000);
          setTimeout(() => this.open(), this.retry);
        })
        .catch(() => conn.lost());
    };
  }
  /// After the server came back: open again unless still open.
  resume() {
    if (this.opening) return;
    if (!this.source || this.source.readyState === EventSource.CLOSED) {
      this.source = null;
      this.open();
    }
  }
  close() {
    this.closed = true;
    if (this.source) this.source.close();
  }
}

// ----------------------------------------------------------------- routing

let view = null; // {dispose(), resync(), route?}

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  return parts;
}

async function render(force = false) {
  const parts = route();
  // Selecting another task of the workflow on screen keeps the page.
  if (!force && view && view.workflow && parts[0] === "workflows" && view.workflow.includes(parts[1])) {
    view.select(parts[2] === "tasks" ? parts[3] : null);
    return;
  }
  if (view && view.dispose) view.dispose();
  view = null;
  document.querySelectorAll("nav a").forEach((a) => {
    const target = a.getAttribute("href").replace(/^#/, "");
    a.classList.toggle("active", "/" + (parts[0] || "") === target || (target === "/" && parts[0] === "workflows"));
  });
  fill(main, h("p", { class: "muted loading" }, "Loading…"));
  try {
    if (parts.length === 0) view = await listView();
    else if (parts[0] === "workflows" && parts[1]) view = await workflowView(parts[1], parts[2] === "tasks" ? parts[3] : null);
    else if (parts[0] === "submit") view = submitView();
    else if (parts[0] === "providers") view = await providersView();
    else if (parts[0] === "nodes") view = await nodesView();
    else view = notFound("Page not found", `There is no page at #/${parts.join("/")}.`);
  } catch (e) {
    view = null;
    failure(e);
  }
  whoami();
}

function failure(e) {
  if (e instanceof AuthNeeded) return keyForm(e.message);
  if (e instanceof Offline) {
    fill(main, errorBox("The server cannot be reached", "This page loads again as soon as it answers."));
    view = { resync: render };
    return;
  }
  if (e instanceof ApiError) return fill(main, errorBox(`${e.body.code || "Error"}: ${e.message}`, e.body.hint));
  console.error(e);
  fill(main, errorBox("Something went wrong in the dashboard", String(e)));
}

function errorBox(title, hint) {
  return h("div", { class: "error-box" }, h("strong", {}, title), hint ? h("p", { class: "hint" }, hint) : null);
}

function notFound(title, text) {
  fill(main, h("section", { class: "not-found" },
    h("div", { class: "big" }, "404"),
    h("h1", {}, title),
    h("p", {}, text),
    h("p", {}, h("a", { href: "#/", class: "button" }, "← Back to all workflows"))));
  return { dispose() {} };
}

// ------------------------------------------------------------------- login

function keyForm(message) {
  const input = h("input", { type: "password", name: "api_key", id: "api-key", placeholder: "gzt_…", autocomplete: "off", required: true });
  const remember = h("input", { type: "checkbox", id: "remember" });
  const error = h("p", { class: "form-error", hidden: true });
  const form = h("form", { class: "card key-form", id: "key-form" },
    h("h1", {}, "API key needed"),
    h("p", {}, "This server requires an API key. Create one with ",
      h("code", {}, "gleitzeit auth init"), " or ", h("code", {}, "gleitzeit auth keys create"), "."),
    message && getKey() ? h("p", { class: "form-error" }, message) : null,
    h("label", { for: "api-key" }, "API key"), input,
    h("label", { class: "check" }, remember, " Remember on this computer"),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    try {
      const r = await fetch("/api/v1/auth/whoami", { headers: { Authorization: `Bearer ${key}` } });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        error.textContent = `${body.code || r.status}: ${body.message || "rejected"}`;
        error.hidden = false;
        return;
      }
      setKey(key, remember.checked);
      render(true);
    } catch {
      conn.lost();
    }
  });
  fill(main, form);
  input.focus();
  view = { resync() {} };
}

async function whoami() {
  const who = document.getElementById("who");
  const logout = document.getElementById("logout");
  if (!getKey()) {
    who.textContent = "";
    logout.hidden = true;
    return;
  }
  try {
    /** @type {WhoAmI} */ const me = await api("/api/v1/auth/whoami");
    who.textContent = me && me.user ? `${me.user} · ${me.role || ""}` : "";
    logout.hidden = false;
  } catch {
    /* shown by the page itself */
  }
}

// ----------------------------------------------------------- workflow list

async function listView() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let state = params.get("state") || "";
  let offset = 0;
  const limit = 50;
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const stateSel = h("select", { id: "state-filter" },
    ["", "pending", "running", "completed", "failed", "cancelled"].map((s) =>
      h("option", { value: s, selected: s === state }, s || "all states")));
  const summary = h("span", { class: "muted" });
  const section = h("section", {},
    h("div", { class: "page-head" },
      h("h1", {}, "Workflows"),
      h("div", { class: "tools" }, stateSel, h("a", { href: "#/submit", class: "button primary" }, "Submit workflow"))),
    h("table", { class: "list", id: "workflow-table" },
      h("thead", {}, h("tr", {}, ["Name", "Id", "State", "Progress", "Created", "Duration"].map((t) => h("th", {}, t)))),
      body),
    h("div", { class: "foot" }, summary, pager));

  async function load() {
    const q = new URLSearchParams({ limit, offset });
    if (state) q.set("state", state);
    /** @type {WorkflowList} */ const data = await api(`/api/v1/workflows?${q}`);
    const rows = data.workflows.map((/** @type {WorkflowSummaryView} */ w) => {
      const done = w.completed + w.failed;
      return h("tr", { "data-id": w.id, class: "clickable", onclick: () => (location.hash = `#/workflows/${enc(w.id)}`) },
        h("td", {}, h("a", { href: `#/workflows/${enc(w.id)}` }, w.name)),
        h("td", { class: "mono" }, w.id.slice(0, 12)),
        h("td", {}, badge(w.state)),
        h("td", {}, progressBar(done, w.failed, w.total)),
        h("td", {}, fmtTime(w.created_ms)),
        h("td", {}, w.finished_ms ? fmtDuration(w.finished_ms - w.created_ms) : "—"));
    });
    fill(body, ...(rows.length ? rows : [h("tr", {}, h("td", { colspan: 6, class: "empty" },
      "No workflows yet. ", h("a", { href: "#/submit" }, "Submit one"), " or run `gleitzeit submit FILE`."))]));
    summary.textContent = rows.length ? `Showing ${offset + 1}–${offset + rows.length}` : "";
    fill(pager, 
      h("button", { disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - limit); load().catch(failure); } }, "← Newer"),
      h("button", { disabled: rows.length < limit, onclick: () => { offset += limit; load().catch(failure); } }, "Older →"));
  }
  stateSel.addEventListener("change", () => {
    state = stateSel.value;
    offset = 0;
    load().catch(failure);
  });
  await load();
  fill(main, section);
  let timer = null;
  const live = new Live({ types: "workflow_started,workflow_progress,workflow_completed,workflow_failed,workflow_cancelled" }, () => {
    // A busy server sends many progress events; re-read the page at most
    // a few times a second.
    if (!timer) timer = setTimeout(() => { timer = null; load().catch(() => {}); }, 400);
  });
  return {
    dispose() { live.close(); clearTimeout(timer); },
    resync() { load().catch(() => {}); live.resume(); },
  };
}

// ------------------------------------------------------------ one workflow

const TASK_STATE_OF = {
  task_started: "running", task_completed: "completed", task_failed: "failed",
  task_retrying: "retrying", task_skipped: "skipped", task_cancelled: "cancelled",
};
const WORKFLOW_STATE_OF = {
  workflow_started: "running", workflow_completed: "completed",
  workflow_failed: "failed", workflow_cancelled: "cancelled",
};

/// The stored duration, else what can be told: a record that was never
/// marked started (a resumed run) is measured from its creation.
/** @param {WorkflowView} wf */
function elapsed(wf) {
  if (wf.duration_ms !== null && wf.duration_ms !== undefined) return wf.duration_ms;
  const from = wf.started_ms || wf.created_ms;
  if (wf.finished_ms) return wf.finished_ms - from;
  return TERMINAL.has(wf.state) ? null : Date.now() - from;
}

async function workflowView(id, selectedTask) {
  // The head first, then the snapshot: events between the two are applied
  // again, which is harmless, and none can fall in a gap.
  let head;
  /** @type {WorkflowView} */ let wf;
  try {
    // This workflow's newest event: the caller's reach is all a head shows.
    /** @type {EventHead} */ const newest = await api(`/api/v1/events/head?workflow_id=${enc(id)}`);
    head = newest.latest_event_seq;
    wf = await api(`/api/v1/workflows/${enc(id)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      return notFound("Workflow not found",
        `No workflow with id “${id}” exists on this server (or it belongs to another user). It may have been deleted, or the link is mistyped.`);
    }
    throw e;
  }
  // What was streamed before this page opened is in the workflow's stored
  // log (read before the live stream starts, so it is shown first); the live
  // stream carries on after `head`.
  let streamed = [];
  try {
    /** @type {EventPage} */ const page = await api(`/api/v1/workflows/${enc(wf.workflow_id)}/events?types=llm_token,task_output&limit=5000`);
    streamed = page.events;
  } catch {
    /* the live part still works */
  }
  const states = new Map(wf.tasks.map((t) => [t.id, t.state]));
  const title = h("h1", {}, wf.name);
  const stateBadge = h("span", { id: "workflow-state" });
  const progress = h("div", { class: "wf-progress" });
  const facts = h("dl", { class: "facts" });
  const actions = h("div", { class: "tools" });
  const graphHost = h("div", { class: "graph", id: "graph" });
  const detail = h("aside", { class: "detail card", id: "task-detail" }, h("p", { class: "muted" }, "Select a task to see its parameters, result and timings."));
  const output = h("div", { class: "output", id: "live-output" });
  const outputs = new Map(); // task id -> <pre>
  const big = wf.tasks.length > GROUP_THRESHOLD;

  function paintHeader() {
    fill(stateBadge, badge(wf.state));
    let done = 0;
    let failed = 0;
    states.forEach((s) => {
      if (TERMINAL.has(s)) done++;
      if (s === "failed") failed++;
    });
    fill(progress, progressBar(done, failed, states.size));
    /** @type {Usage} */ const usage = wf.usage || {};
    fill(facts, 
      h("dt", {}, "Id"), h("dd", { class: "mono" }, wf.workflow_id),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(wf.created_ms)),
      h("dt", {}, "Duration"), h("dd", { id: "wf-duration" }, fmtDuration(elapsed(wf))),
      h("dt", {}, "Tokens"), h("dd", {}, usage.total_tokens ? `${usage.total_tokens} (${usage.prompt_tokens} in, ${usage.completion_tokens} out, ${usage.llm_calls} calls)` : "—"),
      wf.error ? [h("dt", {}, "Error"), h("dd", { class: "err" }, `${wf.error.code}: ${wf.error.message}`)] : null);
    const running = wf.state === "running" || wf.state === "pending";
    fill(actions, 
      running ? h("button", { class: "danger", id: "cancel", onclick: () => act("cancel") }, "Cancel") : null,
      !running && wf.state !== "completed" ? h("button", { id: "resume", onclick: () => act("resume") }, "Resume") : null);
  }

  async function act(what) {
    try {
      await api(`/api/v1/workflows/${enc(wf.workflow_id)}/${what}`, { method: "POST" });
      await refresh();
    } catch (e) {
      if (e instanceof ApiError) showBanner(`${e.body.code}: ${e.message}${e.body.hint ? " — " + e.body.hint : ""}`, "error");
      else failure(e);
    }
  }

  const onSelect = (taskId) => (location.hash = `#/workflows/${enc(wf.workflow_id)}/tasks/${enc(taskId)}`);
  const graph = big ? drawGrouped(graphHost, wf.tasks, onSelect) : drawGraph(graphHost, wf.tasks, onSelect);

  let current = null;
  let detailSeq = 0;
  async function select(taskId) {
    current = taskId;
    graph.select(taskId);
    if (!taskId) return;
    const mine = ++detailSeq;
    /** @type {TaskDetail} */ let task;
    try {
      task = await api(`/api/v1/workflows/${enc(wf.workflow_id)}/tasks/${enc(taskId)}`);
    } catch (e) {
      if (mine !== detailSeq) return;
      fill(detail, e instanceof ApiError
        ? errorBox(`${e.body.code}: ${e.message}`, e.body.hint)
        : errorBox("Could not load the task", String(e.message || e)));
      return;
    }
    if (mine !== detailSeq) return;
    paintTask(task);
  }

  /** @param {TaskDetail} t */
  function paintTask(t) {
    const usage = t.record && t.record.usage;
    /** @type {RetryView} */ const retry = t.retry || {};
    const live = outputs.get(t.id);
    fill(detail, 
      h("div", { class: "detail-head" }, h("h2", {}, t.name || t.id), badge(t.state)),
      h("dl", { class: "facts" },
        h("dt", {}, "Task"), h("dd", { class: "mono" }, t.id),
        h("dt", {}, "Method"), h("dd", { class: "mono" }, t.method),
        h("dt", {}, "Attempt"), h("dd", { id: "task-attempt" }, `${t.attempt}${retry.max_attempts ? ` of ${retry.max_attempts}` : ""}`),
        h("dt", {}, "Started"), h("dd", {}, fmtTime(t.started_ms)),
        h("dt", {}, "Finished"), h("dd", {}, fmtTime(t.finished_ms)),
        h("dt", {}, "Duration"), h("dd", {}, fmtDuration(t.duration_ms)),
        t.timeout ? [h("dt", {}, "Timeout"), h("dd", {}, `${t.timeout} s`)] : null,
        usage ? [h("dt", {}, "Tokens"), h("dd", {}, `${usage.total_tokens ?? (usage.prompt_tokens || 0) + (usage.completion_tokens || 0)} (${usage.prompt_tokens ?? "?"} in, ${usage.completion_tokens ?? "?"} out)`)] : null,
        t.dependencies && t.dependencies.length ? [h("dt", {}, "Needs"), h("dd", {}, t.dependencies.map((d) =>
          h("a", { class: "chip", href: `#/workflows/${enc(wf.workflow_id)}/tasks/${enc(d)}` }, d)))] : null),
      t.error ? h("div", { class: "error-box task-error" },
        h("strong", {}, t.error.code),
        h("pre", { class: "errmsg" }, t.error.message),
        t.error.hint ? h("p", { class: "hint" }, "Hint: ", t.error.hint) : null,
        t.error.location ? h("p", { class: "muted" }, t.error.location) : null) : null,
      h("h3", {}, "Result"),
      t.result !== null && t.result !== undefined
        ? h("pre", { class: "json", id: "task-result" }, typeof t.result === "string" ? t.result : json(t.result))
        : h("p", { class: "muted" }, TERMINAL.has(t.state) ? "No result." : "Not finished yet."),
      live ? [h("h3", {}, "Live output"), h("pre", { class: "json stream" }, live.textContent)] : null,
      h("h3", {}, "Parameters"),
      h("pre", { class: "json", id: "task-parameters" }, json(t.parameters ?? {})),
      t.record ? h("details", {}, h("summary", {}, "Full result record"), h("pre", { class: "json" }, json(t.record))) : null);
  }

  function appendOutput(event) {
    const d = event.data || {};
    const text = event.type === "llm_token" ? d.token : `${d.line}\n`;
    if (typeof text !== "string") return;
    let pre = outputs.get(d.task_id);
    if (!pre) {
      pre = h("pre", { class: "stream", "data-task": d.task_id });
      outputs.set(d.task_id, pre);
      output.append(h("div", { class: "stream-head" }, d.task_id), pre);
      const box = output.closest("section");
      if (box) box.hidden = false;
    }
    // Keep the tail: a long generation must not grow the page forever.
    pre.textContent = (pre.textContent + text).slice(-20000);
    pre.scrollTop = pre.scrollHeight;
    if (d.task_id === current) {
      const mirror = detail.querySelector("pre.stream");
      if (mirror) mirror.textContent = pre.textContent;
    }
  }

  let refreshTimer = null;
  async function refresh() {
    const fresh = await api(`/api/v1/workflows/${enc(wf.workflow_id)}`);
    wf = fresh;
    for (const t of wf.tasks) {
      if (states.get(t.id) !== t.state) {
        states.set(t.id, t.state);
        graph.update(t.id, t.state);
      }
    }
    paintHeader();
    if (current) select(current);
  }
  const soon = () => {
    if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; refresh().catch(() => {}); }, 300);
  };

  let headerFrame = false;
  const live = new Live({ workflow_id: wf.workflow_id, after: head }, (event) => {
    const d = event.data || {};
    if (TASK_STATE_OF[event.type]) {
      states.set(d.task_id, TASK_STATE_OF[event.type]);
      graph.update(d.task_id, TASK_STATE_OF[event.type]);
      if (d.task_id === current) select(current);
    } else if (WORKFLOW_STATE_OF[event.type]) {
      wf.state = WORKFLOW_STATE_OF[event.type];
      // Finished: read durations, usage and the error once.
      if (TERMINAL.has(wf.state)) soon();
    } else if (event.type === "llm_token" || event.type === "task_output") {
      appendOutput(event);
    }
    if (!headerFrame) {
      headerFrame = true;
      requestAnimationFrame(() => { headerFrame = false; paintHeader(); });
    }
  });

  fill(main, h("section", { class: "workflow", "data-workflow": wf.workflow_id, "data-view": big ? "grouped" : "graph" },
    h("div", { class: "page-head" },
      h("div", {}, h("a", { href: "#/", class: "crumb" }, "Workflows"), h("div", { class: "title-row" }, title, stateBadge)),
      actions),
    progress,
    facts,
    h("div", { class: "split" },
      h("section", { class: "card graph-card" }, h("h2", {}, big ? "Tasks (grouped)" : "Task graph"), graphHost),
      detail),
    h("section", { class: "card", hidden: true }, h("h2", {}, "Live output"), output)));
  paintHeader();
  for (const event of streamed) if (event.seq <= head) appendOutput(event);
  if (selectedTask) select(selectedTask);

  return {
    // The full id and the one in the URL (which may be a prefix).
    workflow: [wf.workflow_id, id],
    select,
    dispose() { live.close(); clearTimeout(refreshTimer); },
    resync() { refresh().catch(() => {}); live.resume(); },
  };
}

// ------------------------------------------------------------------ submit

const EXAMPLE = `name: "Dashboard example"
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
        result = f"sum={inputs['total']} squares={len(inputs['squares'])}"
      inputs: {total: "\${total}", squares: "\${squares}"}
`;

function submitView() {
  const yaml = h("textarea", { id: "workflow-yaml", name: "workflow", rows: 22, spellcheck: "false", placeholder: "name: my workflow\ntasks:\n  - id: hello\n    method: python/execute\n    parameters: {code: \"result = 'hi'\"}" });
  const inputs = h("textarea", { id: "workflow-inputs", name: "inputs", rows: 3, spellcheck: "false", placeholder: "topic=Rust\n(one key=value per line)" });
  const file = h("input", { type: "file", accept: ".yaml,.yml,.json" });
  const result = h("div", { id: "submit-result" });
  file.addEventListener("change", async () => {
    if (file.files[0]) yaml.value = await file.files[0].text();
  });
  const form = h("form", { class: "card submit-form", id: "submit-form" },
    h("label", { for: "workflow-yaml" }, "Workflow (YAML or JSON)"), yaml,
    h("div", { class: "row" }, file, h("button", { type: "button", onclick: () => (yaml.value = EXAMPLE) }, "Insert example")),
    h("label", { for: "workflow-inputs" }, "Inputs (optional)"), inputs,
    result,
    h("button", { type: "submit", class: "primary", id: "submit-button" }, "Submit"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const line of inputs.value.split("\n").map((l) => l.trim()).filter(Boolean)) q.append("input", line);
    fill(result);
    try {
      /** @type {SubmitResponse} */ const answer = await api(`/api/v1/workflows${q.toString() ? "?" + q : ""}`, {
        method: "POST", body: yaml.value, headers: { "Content-Type": "application/yaml" },
      });
      location.hash = `#/workflows/${enc(answer.workflow_id)}`;
    } catch (err) {
      if (err instanceof ApiError) {
        /** @type {ErrorBody} */ const body = err.body;
        const diags = body.diagnostics || [];
        fill(result, h("div", { class: "error-box", id: "submit-error" },
          h("strong", {}, `${body.code}: ${err.message}`),
          body.hint ? h("p", { class: "hint" }, body.hint) : null,
          diags.length ? h("ul", {}, diags.map((/** @type {DiagnosticBody} */ d) => h("li", {},
            h("span", { class: "mono" }, `line ${d.line}:${d.column} ${d.code}`), " ", d.message,
            d.hint ? h("span", { class: "hint" }, ` — ${d.hint}`) : null))) : null));
      } else failure(err);
    }
  });
  fill(main, h("section", {}, h("div", { class: "page-head" }, h("h1", {}, "Submit a workflow")), form));
  return { dispose() {} };
}

// ------------------------------------------------------ providers and nodes

async function providersView() {
  const table = h("tbody");
  const status = h("span", { class: "muted" });
  async function load(check) {
    status.textContent = check ? "Checking…" : "";
    /** @type {ProviderList} */ const data = await api(`/api/v1/providers${check ? "?check=true" : ""}`);
    fill(table, ...data.providers.map((/** @type {ProviderEntry} */ p) => h("tr", { "data-protocol": p.protocol },
      h("td", { class: "mono" }, p.protocol),
      h("td", {}, (p.methods || []).map((m) => h("span", { class: "chip", title: m.description || "" }, m.method || String(m)))),
      h("td", {}, p.health ? healthCell(p.health) : h("span", { class: "muted" }, "not checked")))));
    status.textContent = check ? `Checked ${new Date().toLocaleTimeString()}` : "";
  }
  await load(false);
  fill(main, h("section", {},
    h("div", { class: "page-head" }, h("h1", {}, "Providers"),
      h("div", { class: "tools" }, status, h("button", { id: "check-health", onclick: () => load(true).catch(failure) }, "Check health"))),
    h("table", { class: "list", id: "providers-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Protocol"), h("th", {}, "Methods"), h("th", {}, "Health"))), table)));
  return { dispose() {}, resync() { load(false).catch(() => {}); } };
}

/** @param {ProviderHealthView} health */
function healthCell(health) {
  const status = String(health.status || "unknown");
  return h("span", { class: `health health-${status}` }, badge(status),
    health.reason ? h("span", { class: "muted" }, ` ${health.reason}`) : null);
}

async function nodesView() {
  const host = h("div");
  async function load() {
    /** @type {NodeList} */ let data;
    try {
      data = await api("/api/v1/nodes");
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 403)) throw e;
      fill(host, h("div", { class: "card empty-state", id: "nodes-forbidden" },
        h("p", {}, "Your key's role may not list worker nodes (ADMIN and OPERATOR may).")));
      return;
    }
    if (!data.scale_out) {
      fill(host, h("div", { class: "card empty-state", id: "nodes-empty" },
        h("p", {}, "This server runs tasks in-process: there are no worker nodes."),
        h("p", { class: "muted" }, "Scale out with the Redis backend: ", h("code", {}, "gleitzeit serve --backend redis"), " and ", h("code", {}, "gleitzeit worker"), ".")));
      return;
    }
    const nodes = data.nodes || [];
    fill(host, nodes.length
      ? h("table", { class: "list", id: "nodes-table" },
        h("thead", {}, h("tr", {}, ["Node", "State", "Host", "Capabilities", "Labels", "Running", "Done / failed", "Last heartbeat"].map((t) => h("th", {}, t)))),
        h("tbody", {}, nodes.map((/** @type {NodeView} */ n) => h("tr", {},
          h("td", { class: "mono" }, n.id),
          h("td", {}, badge(n.state || "active")),
          h("td", {}, `${n.host} (pid ${n.pid}, v${n.version})`),
          h("td", {}, (n.capabilities || []).map((c) => h("span", { class: "chip" }, c)), n.gpu ? h("span", { class: "chip" }, "gpu") : null),
          h("td", {}, Object.entries(n.labels || {}).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))),
          h("td", {}, `${n.running}/${n.concurrency}`),
          h("td", {}, `${n.completed} / ${n.failed}`),
          h("td", {}, fmtTime(n.heartbeat_ms))))))
      : h("div", { class: "card empty-state", id: "nodes-empty" }, h("p", {}, "No worker node is registered right now.")));
  }
  await load();
  fill(main, h("section", {}, h("div", { class: "page-head" }, h("h1", {}, "Worker nodes"),
    h("div", { class: "tools" }, h("button", { onclick: () => load().catch(failure) }, "Refresh"))), host));
  const live = new Live({ types: "node_joined,node_left" }, () => load().catch(() => {}));
  return { dispose() { live.close(); }, resync() { load().catch(() => {}); live.resume(); } };
}

// -------------------------------------------------------------------- start

document.getElementById("logout").addEventListener("click", () => {
  forgetKey();
  render(true);
});
window.addEventListener("hashchange", () => render());
render();
