// DAG layout and drawing. Small graphs are drawn as SVG with a layered
// layout; big ones (where thousands of SVG nodes would make the page crawl)
// become one counted group per layer plus a virtualised, searchable table.

const SVG = "http://www.w3.org/2000/svg";
export const GROUP_THRESHOLD = 300;

const NODE_W = 168;
const NODE_H = 34;
const GAP_X = 56;
const GAP_Y = 14;
const PAD = 16;

/// Longest-path layering: a task sits one layer right of its deepest
/// dependency, so every edge points rightwards. Kahn's order keeps it linear
/// in tasks + edges; dependencies on unknown ids are ignored.
export function layers(tasks) {
  const byId = new Map(tasks.map((t, i) => [t.id, i]));
  const indegree = new Array(tasks.length).fill(0);
  const children = tasks.map(() => []);
  tasks.forEach((/** @type {TaskView} */ t, i) => {
    for (const dep of t.dependencies || []) {
      const j = byId.get(dep);
      if (j === undefined || j === i) continue;
      indegree[i]++;
      children[j].push(i);
    }
  });
  const layer = new Array(tasks.length).fill(0);
  const queue = [];
  indegree.forEach((d, i) => d === 0 && queue.push(i));
  for (let head = 0; head < queue.length; head++) {
    const i = queue[head];
    for (const c of children[i]) {
      layer[c] = Math.max(layer[c], layer[i] + 1);
      if (--indegree[c] === 0) queue.push(c);
    }
  }
  // A cycle cannot be stored (validation refuses it); should one appear
  // anyway, its tasks stay in layer 0 rather than vanish.
  const count = layer.reduce((m, l) => Math.max(m, l), 0) + 1;
  const rows = Array.from({ length: count }, () => []);
  layer.forEach((l, i) => rows[l].push(i));
  return { layer, rows, byId, children };
}

/// Orders each layer by the mean position of its neighbours (barycentre),
/// sweeping down then up a few times: cheap and removes most crossings.
function order(tasks, { rows, byId, children }) {
  const pos = new Array(tasks.length).fill(0);
  const place = (row) => row.forEach((i, k) => (pos[i] = k));
  rows.forEach(place);
  const parents = tasks.map((t) =>
    (t.dependencies || []).map((d) => byId.get(d)).filter((j) => j !== undefined),
  );
  const centre = (list, i) =>
    list.length ? list.reduce((s, j) => s + pos[j], 0) / list.length : pos[i];
  for (let sweep = 0; sweep < 4; sweep++) {
    const down = sweep % 2 === 0;
    const seq = down ? rows.slice(1) : rows.slice(0, -1).reverse();
    for (const row of seq) {
      const key = new Map(row.map((i) => [i, centre(down ? parents[i] : children[i], i)]));
      row.sort((a, b) => key.get(a) - key.get(b));
      place(row);
    }
  }
}

function el(name, attrs = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function short(text, max) {
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/// Draws `tasks` ({id, method, state, dependencies}) into `host`. Returns
/// `update(id, state)` and `select(id)`; clicks call `onSelect(id)`.
export function drawGraph(host, tasks, onSelect) {
  const shape = layers(tasks);
  order(tasks, shape);
  const tallest = shape.rows.reduce((m, r) => Math.max(m, r.length), 1);
  const width = PAD * 2 + shape.rows.length * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y;
  const at = new Array(tasks.length);
  shape.rows.forEach((row, l) => {
    // Centre short layers against the tallest one.
    const offset = ((tallest - row.length) * (NODE_H + GAP_Y)) / 2;
    row.forEach((i, k) => {
      at[i] = { x: PAD + l * (NODE_W + GAP_X), y: PAD + offset + k * (NODE_H + GAP_Y) };
    });
  });
  const svg = el("svg", {
    class: "dag",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `Task graph: ${tasks.length} tasks in ${shape.rows.length} layers`,
  });
  const defs = el("defs");
  const marker = el("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  });
  marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  const edges = el("g", { class: "edges" });
  tasks.forEach((/** @type {TaskView} */ t, i) => {
    for (const dep of t.dependencies || []) {
      const j = shape.byId.get(dep);
      if (j === undefined) continue;
      const x1 = at[j].x + NODE_W, y1 = at[j].y + NODE_H / 2;
      const x2 = at[i].x, y2 = at[i].y + NODE_H / 2;
      const mid = (x1 + x2) / 2;
      edges.appendChild(el("path", {
        class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`,
        "marker-end": "url(#arrow)", "data-from": dep, "data-to": t.id,
      }));
    }
  });
  svg.appendChild(edges);
  const nodes = new Map();
  tasks.forEach((t, i) => {
    const g = el("g", {
      class: `node state-${t.state}`, transform: `translate(${at[i].x},${at[i].y})`,
      "data-task": t.id, tabindex: 0, role: "button",
    });
    const title = el("title");
    title.textContent = `${t.id} (${t.method}) — ${t.state}`;
    g.appendChild(title);
    g.appendChild(el("rect", { width: NODE_W, height: NODE_H, rx: 7 }));
    g.appendChild(el("circle", { class: "dot", cx: 14, cy: NODE_H / 2, r: 5 }));
    const label = el("text", { x: 26, y: 14, class: "label" });
    label.textContent = short(t.id, 20);
    const method = el("text", { x: 26, y: 27, class: "method" });
    method.textContent = short(t.method, 24);
    g.append(label, method);
    g.addEventListener("click", () => onSelect(t.id));
    g.addEventListener("keydown", (e) => (e.key === "Enter" || e.key === " ") && onSelect(t.id));
    nodes.set(t.id, g);
  });
  const layer = el("g", { class: "nodes" });
  nodes.forEach((g) => layer.appendChild(g));
  svg.appendChild(layer);
  host.replaceChildren(svg);
  let selected = null;
  return {
    update(id, state) {
      const g = nodes.get(id);
      if (g) {
        g.setAttribute("class", `node state-${state}${id === selected ? " selected" : ""}`);
        g.querySelector("title").textContent = `${id} — ${state}`;
      }
    },
    select(id) {
      if (selected && nodes.get(selected)) nodes.get(selected).classList.remove("selected");
      selected = id;
      const g = nodes.get(id);
      if (g) g.classList.add("selected");
    },
  };
}

const ROW_H = 28;

/// The big-graph view: one card per layer with counts by state, and a
/// searchable task table that only ever has the visible rows in the DOM.
export function drawGrouped(host, tasks, onSelect) {
  const shape = layers(tasks);
  const stateOf = new Map(tasks.map((t) => [t.id, t.state]));
  const layerOf = new Map(tasks.map((t, i) => [t.id, shape.layer[i]]));
  const counts = shape.rows.map((row) => {
    const c = {};
    for (const i of row) c[tasks[i].state] = (c[tasks[i].state] || 0) + 1;
    return c;
  });

  const note = document.createElement("p");
  note.className = "muted";
  note.textContent = `${tasks.length.toLocaleString()} tasks in ${shape.rows.length} layers — grouped by layer (graphs over ${GROUP_THRESHOLD} tasks are not drawn node by node).`;

  const strip = document.createElement("div");
  strip.className = "layer-strip";
  const cards = shape.rows.map((row, l) => {
    const card = document.createElement("button");
    card.type = "button";
    card.className = "layer-card";
    card.dataset.layer = l;
    card.addEventListener("click", () => {
      filterLayer = filterLayer === l ? null : l;
      cards.forEach((c, k) => c.classList.toggle("active", k === filterLayer));
      refilter();
    });
    strip.appendChild(card);
    if (l < shape.rows.length - 1) {
      const arrow = document.createElement("span");
      arrow.className = "layer-arrow";
      arrow.textContent = "→";
      strip.appendChild(arrow);
    }
    return card;
  });
  const STATES = ["completed", "running", "retrying", "failed", "ready", "pending", "skipped", "cancelled"];
  function paintCard(l) {
    const card = cards[l];
    const c = counts[l];
    const total = shape.rows[l].length;
    const done = (c.completed || 0) + (c.failed || 0) + (c.skipped || 0) + (c.cancelled || 0);
    card.replaceChildren();
    const head = document.createElement("div");
    head.className = "layer-head";
    head.textContent = `Layer ${l + 1} · ${total.toLocaleString()} task${total === 1 ? "" : "s"}`;
    const bar = document.createElement("div");
    bar.className = "stack";
    for (const s of STATES) {
      if (!c[s]) continue;
      const seg = document.createElement("span");
      seg.className = `seg state-${s}`;
      seg.style.width = `${(100 * c[s]) / total}%`;
      seg.title = `${c[s]} ${s}`;
      bar.appendChild(seg);
    }
    const foot = document.createElement("div");
    foot.className = "layer-foot";
    foot.textContent = `${done.toLocaleString()}/${total.toLocaleString()} done` +
      (c.failed ? ` · ${c.failed} failed` : "") + (c.running ? ` · ${c.running} running` : "");
    card.append(head, bar, foot);
  }
  cards.forEach((_, l) => paintCard(l));

  const tools = document.createElement("div");
  tools.className = "table-tools";
  const search = document.createElement("input");
  search.type = "search";
  search.placeholder = "Search tasks by id or method…";
  search.className = "task-search";
  const stateSel = document.createElement("select");
  stateSel.className = "task-state-filter";
  for (const s of ["", ...STATES]) {
    const o = document.createElement("option");
    o.value = s;
    o.textContent = s || "any state";
    stateSel.appendChild(o);
  }
  const shown = document.createElement("span");
  shown.className = "muted";
  tools.append(search, stateSel, shown);

  const viewport = document.createElement("div");
  viewport.className = "vtable";
  const spacer = document.createElement("div");
  spacer.className = "vspacer";
  const rowsHost = document.createElement("div");
  rowsHost.className = "vrows";
  viewport.append(spacer, rowsHost);

  let filterLayer = null;
  let visible = tasks.map((_, i) => i);
  let selected = null;
  function refilter() {
    const q = search.value.trim().toLowerCase();
    const s = stateSel.value;
    visible = [];
    tasks.forEach((t, i) => {
      if (filterLayer !== null && shape.layer[i] !== filterLayer) return;
      if (s && stateOf.get(t.id) !== s) return;
      if (q && !t.id.toLowerCase().includes(q) && !t.method.toLowerCase().includes(q)) return;
      visible.push(i);
    });
    shown.textContent = `${visible.length.toLocaleString()} shown` +
      (filterLayer !== null ? ` (layer ${filterLayer + 1})` : "");
    spacer.style.height = `${visible.length * ROW_H}px`;
    paintRows();
  }
  function paintRows() {
    const first = Math.max(0, Math.floor(viewport.scrollTop / ROW_H) - 10);
    const last = Math.min(visible.length, first + Math.ceil((viewport.clientHeight || 480) / ROW_H) + 20);
    const frag = document.createDocumentFragment();
    for (let k = first; k < last; k++) {
      const t = tasks[visible[k]];
      const row = document.createElement("div");
      row.className = "vrow" + (t.id === selected ? " selected" : "");
      row.style.top = `${k * ROW_H}px`;
      row.dataset.task = t.id;
      const state = stateOf.get(t.id);
      const badge = document.createElement("span");
      badge.className = `badge state-${state}`;
      badge.textContent = state;
      const id = document.createElement("span");
      id.className = "vid";
      id.textContent = t.id;
      const method = document.createElement("span");
      method.className = "vmethod";
      method.textContent = t.method;
      const layer = document.createElement("span");
      layer.className = "vlayer";
      layer.textContent = `L${layerOf.get(t.id) + 1}`;
      row.append(badge, id, method, layer);
      row.addEventListener("click", () => onSelect(t.id));
      frag.appendChild(row);
    }
    rowsHost.replaceChildren(frag);
  }
  let scheduled = false;
  viewport.addEventListener("scroll", () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      paintRows();
    });
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(refilter, 120);
  });
  stateSel.addEventListener("change", refilter);

  host.replaceChildren(note, strip, tools, viewport);
  refilter();

  // Thousands of events may arrive per second: apply them to the counts at
  // once but repaint at most once per frame.
  const dirty = new Set();
  let frame = false;
  function flush() {
    frame = false;
    dirty.forEach(paintCard);
    dirty.clear();
    paintRows();
  }
  return {
    update(id, state) {
      const old = stateOf.get(id);
      if (old === undefined || old === state) return;
      const l = layerOf.get(id);
      counts[l][old]--;
      counts[l][state] = (counts[l][state] || 0) + 1;
      stateOf.set(id, state);
      dirty.add(l);
      if (!frame) {
        frame = true;
        requestAnimationFrame(flush);
      }
    },
    select(id) {
      selected = id;
      paintRows();
    },
  };
}
