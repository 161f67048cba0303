// The stereo dashboard: one server-sent event stream (/events) feeds the page once a second;
// the controls POST to /api/action after a confirmation. No framework, no build step.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const query = token ? "?token=" + encodeURIComponent(token) : "";
const POINTS = 300;
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a3069", "#6e7781"];
let history = [];

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(0) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
}

function number(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

async function act(body, question) {
  if (!window.confirm(question)) return;
  const notice = document.getElementById("notice");
  notice.textContent = "…";
  const reply = await fetch("/api/action" + query, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Stereo-Token": token},
    body: JSON.stringify(body),
  });
  const answer = await reply.json().catch(() => ({error: reply.statusText}));
  notice.textContent = reply.ok ? body.action + ": done " + JSON.stringify(answer.result) : "refused: " + answer.error;
}

// One table row per process (or per slot without one); `extra` are the cells after CPU.
function processRow(row, extra, noun) {
  const tr = el("tr", null, "state-" + row.state);
  tr.dataset.slot = row.slot;
  tr.dataset.pid = row.pid === null ? "" : row.pid;
  tr.dataset.state = row.state;
  const cells = [
    row.slot, row.pid === null ? "–" : row.pid, row.state + (row.current || row.pid === null ? "" : " (old)"),
    duration(row.uptime), row.restarts, bytes(row.rss),
    row.cpu_percent === null || row.cpu_percent === undefined ? "–" : row.cpu_percent.toFixed(1) + "%",
    ...extra,
  ];
  cells.forEach((text) => tr.append(el("td", text)));
  tr.append(el("td", row.last_exit || "", "exit"));
  const buttons = el("td");
  if (row.current || row.pid === null) {
    const restart = el("button", "Restart", "restart");
    restart.type = "button";
    restart.onclick = () => act({action: "restart", slot: row.slot}, "Restart " + noun + " " + row.slot + "?");
    const remove = el("button", "Remove", "remove");
    remove.type = "button";
    remove.onclick = () => act({action: "remove", slot: row.slot}, "Remove " + noun + " " + row.slot + "?");
    buttons.append(restart, " ", remove);
  }
  tr.append(buttons);
  return tr;
}

function renderWorkers(rows) {
  document.querySelector("#workers tbody").replaceChildren(...rows.map((row) => processRow(
    row, [number(row.messages_in), number(row.messages_out), bytes(row.outbox_bytes)], "worker")));
}

const POOL_COLUMNS = ["Slot", "PID", "State", "Uptime", "Restarts", "Memory", "CPU", "Queued", "Done", "Last exit", ""];

// One block per job pool (--pool): its summary and its processes; the section is hidden without.
function renderPools(pools) {
  const section = document.getElementById("pools");
  section.hidden = !pools || pools.length === 0;
  const list = document.getElementById("pool-list");
  list.replaceChildren();
  for (const pool of pools || []) {
    const box = el("div", null, "pool");
    box.dataset.pool = pool.name;
    const current = pool.processes.filter((row) => row.current).length;
    const summary = el("p", null, "pool-summary");
    summary.append(
      el("span", pool.ready + " of " + current + " ready", "ready"), ", ",
      el("span", number(pool.queued), "queued"), " jobs queued, ",
      el("span", number(pool.done), "done"), " done",
    );
    const table = el("table", null, "pool-processes");
    const head = el("tr");
    POOL_COLUMNS.forEach((name) => head.append(el("th", name)));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    table.tBodies[0].append(...pool.processes.map((row) => processRow(
      row, [number(row.jobs_queued), number(row.jobs_done)], "pool process")));
    box.append(el("h3", "pool " + pool.name), summary, table);
    list.append(box);
  }
}

const SVG = "http://www.w3.org/2000/svg";

function chart(id, series, format) {
  const svg = document.getElementById(id);
  const legend = document.getElementById("legend-" + id.slice(6));
  const width = 400, height = 140, left = 44, bottom = 14;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > max) max = v;
  max = max || 1;
  svg.replaceChildren();
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", left); axis.setAttribute("x2", width);
  axis.setAttribute("y1", height - bottom); axis.setAttribute("y2", height - bottom);
  svg.append(axis);
  for (const [y, label] of [[4, format(max)], [height - bottom, "0"]]) {
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", 0); text.setAttribute("y", y + 8);
    text.textContent = label;
    svg.append(text);
  }
  const span = Math.max(POINTS - 1, 1);
  legend.replaceChildren();
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const offset = POINTS - s.values.length;
    const points = [];
    s.values.forEach((v, j) => {
      if (v === null || v === undefined) return;
      const x = left + ((offset + j) / span) * (width - left);
      const y = height - bottom - (v / max) * (height - bottom - 6);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "1.5");
    line.dataset.series = s.name;
    svg.append(line);
    const key = el("span", "■ " + s.name);
    key.style.color = color;
    legend.append(key);
  });
}

function renderCharts() {
  const rate = (name) => history.map((p) => p.rates[name]);
  chart("chart-rates", [
    {name: "broadcasts/s", values: rate("broadcasts")},
    {name: "deliveries/s", values: rate("deliveries")},
  ], (v) => Math.round(v).toLocaleString("en"));
  const pools = [...new Set(history.flatMap((p) => Object.keys(p.jobs || {})))];
  if (pools.length) {
    chart("chart-jobs", pools.map((name) => ({
      name: "pool " + name, values: history.map((p) => (p.jobs || {})[name] ?? null),
    })), (v) => Math.round(v).toLocaleString("en"));
  }
  const slots = [...new Set(history.flatMap((p) => Object.keys(p.workers)))].sort((a, b) => a - b);
  const label = (slot) => {
    const seen = history.findLast((p) => p.workers[slot]).workers[slot];
    return (seen.pool ? "pool " + seen.pool + ", " : "worker ") + slot;
  };
  const per = (key) => slots.map((slot) => ({
    name: label(slot),
    values: history.map((p) => (p.workers[slot] ? p.workers[slot][key] : null)),
  }));
  chart("chart-cpu", per("cpu"), (v) => v.toFixed(0) + "%");
  chart("chart-mem", per("rss"), bytes);
}

function renderPairs(id, pairs) {
  const list = document.getElementById(id);
  list.replaceChildren();
  for (const [name, value] of pairs) list.append(el("dt", name), el("dd", value));
}

function renderLogs(lines, available) {
  const list = document.getElementById("logs");
  const note = document.getElementById("logs-note");
  note.hidden = available !== false;
  note.textContent = "This master has no `logs` command: only the dashboard's own lines are shown.";
  for (const line of lines) {
    const who = line.source === "worker" ? "worker " + line.worker : line.source;
    const item = el("li", line.time + " [" + who + "] " + line.message, line.source);
    list.append(item);
  }
  while (list.children.length > 200) list.firstChild.remove();
  if (lines.length) list.scrollTop = list.scrollHeight;
}

function render(state) {
  const status = document.getElementById("status");
  if (state.error) {
    status.textContent = "master unreachable: " + state.error;
    status.className = "status down";
    return;
  }
  status.textContent = "live";
  status.className = "status live";
  document.getElementById("master").textContent =
    "master pid " + state.master.pid + ", up " + duration(state.master.uptime);
  renderWorkers(state.workers);
  renderPools(state.pools);
  renderCharts();
  const hub = state.hub;
  renderPairs("hub-totals", [
    ["broadcasts", number(hub.broadcasts)], ["deliveries", number(hub.deliveries)],
    ["bytes in", bytes(hub.bytes_in)], ["bytes out", bytes(hub.bytes_out)],
    ["cut-offs", number(hub.cutoffs)], ["connected workers", number(hub.peers)],
  ]);
  const bridge = document.getElementById("bridge");
  bridge.hidden = !state.bridge;
  if (state.bridge) {
    const b = state.bridge;
    renderPairs("bridge-state", [
      ["broker", b.url + " (" + b.name + ")"], ["connected", b.connected ? "yes" : "no"],
      ["pending", number(b.pending_batches) + " batches, " + bytes(b.pending_bytes)],
      ["restarts", number(b.restarts)], ["resets", number(b.resets)],
      ["last reset", b.last_reset || "–"],
    ]);
  }
  renderLogs(state.logs || [], state.logs_available);
}

function connect() {
  const source = new EventSource("/events" + query);
  source.onmessage = (event) => {
    const state = JSON.parse(event.data);
    if (state.history) {  // the first event of a (re)connection: everything kept so far
      history = state.history;
      document.getElementById("logs").replaceChildren();
    } else if (state.point) history.push(state.point);
    if (history.length > POINTS) history = history.slice(-POINTS);
    render(state);
  };
  source.onerror = () => {
    const status = document.getElementById("status");
    status.textContent = "reconnecting…";
    status.className = "status down";
  };
}

document.getElementById("add").onclick = () => act({action: "add", count: 1}, "Add a worker?");
document.getElementById("scale").onclick = () => {
  const workers = Number(document.getElementById("scale-to").value);
  act({action: "scale", workers: workers}, "Scale to " + workers + " workers?");
};
connect();
