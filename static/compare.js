/* /compare: start a comparison, drive every machine with one action bar, show the grids and
 * the table of measured results. The server does the work (webapp/compare_lab.py); this page
 * polls GET /api/compare and builds its DOM with textContent only (CSP: no inline script).
 */
import { decodeCells, drawRow, fillOf } from "./compare_grid.js";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const POLL_MS = 600;
let columnsKey = "";
let pollTimer = null;

async function api(method, path, body) {
  const init = { method, headers: { "X-CSRFToken": csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data;
  try { data = await response.json(); } catch { data = { ok: false, error: `HTTP ${response.status}` }; }
  if (!data.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function buildColumns(lab) {
  const host = $("columns");
  host.replaceChildren();
  const template = $("column-template");
  for (const col of lab.columns) {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.mechanism = col.name;
    node.querySelector(".col-title").textContent = col.title;
    node.querySelector(".col-kind").textContent = col.kind === "model"
      ? "behaviour model (the RFC's description, not an emulation)"
      : "shipped QEMU 7.2 + Linux 6.1 behaviour";
    node.querySelector(".col-note").textContent = col.note;
    const legend = node.querySelector(".col-legend");
    for (const item of col.legend) {
      const li = el("li");
      const swatch = el("span", "", "swatch");
      swatch.style.background = fillOf(item.code);
      li.append(swatch, document.createTextNode(item.text));
      legend.append(li);
    }
    host.append(node);
  }
}

function updateColumns(lab) {
  for (const col of lab.columns) {
    const node = $("columns").querySelector(`[data-mechanism="${CSS.escape(col.name)}"]`);
    if (!node) continue;
    node.dataset.runstate = col.runstate;
    node.querySelector(".col-status").textContent =
      `${col.runstate} · ${col.assigned_text} · host memory in use ${col.resident_text}`;
    const grid = node.querySelector(".col-grid");
    const rows = grid.querySelectorAll(".grid-row");
    if (rows.length !== col.grid.length) {
      grid.replaceChildren(...col.grid.map(() => {
        const row = el("div", undefined, "grid-row");
        row.append(el("span", "", "grid-label"), document.createElement("canvas"));
        return row;
      }));
    }
    grid.querySelectorAll(".grid-row").forEach((row, i) => {
      const data = col.grid[i];
      row.querySelector(".grid-label").textContent = data.label;
      const canvas = row.querySelector("canvas");
      canvas.setAttribute("aria-label", data.label);
      canvas.dataset.row = data.label;
      drawRow(canvas, decodeCells(data.cells), { cell: 6, width: 288 });
    });
  }
}

function updateTable(lab) {
  const table = $("result-table");
  const head = el("tr");
  head.append(el("th", "measured"));
  for (const col of lab.columns) head.append(el("th", col.title));
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const row of lab.rows) {
    const tr = el("tr");
    tr.dataset.row = row.key;
    tr.append(el("th", row.title));
    for (const col of lab.columns) {
      const result = col.results[row.key];
      const td = el("td", result ? result.text : "–");
      td.dataset.mechanism = col.name;
      td.dataset.filled = result ? "yes" : "no";
      if (result && !result.ok) td.classList.add("refused");
      tr.append(td);
    }
    body.append(tr);
  }
}

function render(lab) {
  const running = Boolean(lab);
  $("start-form").hidden = running;
  $("action-bar").hidden = !running;
  $("columns").hidden = !running;
  $("results").hidden = !running;
  if (!running) {
    $("lab-status").textContent = "no comparison running";
    columnsKey = "";
    return;
  }
  const key = lab.columns.map((c) => c.name).join(",");
  if (key !== columnsKey) { buildColumns(lab); columnsKey = key; }
  updateColumns(lab);
  updateTable(lab);
  const busy = lab.busy;
  document.body.dataset.busy = busy || "";
  document.body.dataset.done = lab.done.join(",");
  $("lab-status").textContent = busy ? `working: ${busy}…` : `ready · done: ${lab.done.join(", ") || "nothing yet"}`;
  for (const button of document.querySelectorAll(".action")) button.disabled = Boolean(busy);
}

async function refresh() {
  try {
    const data = await api("GET", "/api/compare");
    render(data.lab);
    schedule(data.lab ? POLL_MS : 0);
  } catch (err) {
    $("action-error").textContent = err.message;
    schedule(POLL_MS * 4);
  }
}

function schedule(ms) {
  clearTimeout(pollTimer);
  if (ms) pollTimer = setTimeout(refresh, ms);
}

$("start-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("start-error").textContent = "";
  const mechanisms = [...document.querySelectorAll('input[name="mechanism"]:checked')].map((i) => i.value);
  const online = document.querySelector('input[name="online"]:checked').value;
  $("btn-start").disabled = true;
  try {
    const data = await api("POST", "/api/compare", { mechanisms, online });
    render(data.lab);
    schedule(POLL_MS);
  } catch (err) {
    $("start-error").textContent = err.message;
  } finally {
    $("btn-start").disabled = false;
  }
});

for (const button of document.querySelectorAll(".action")) {
  button.addEventListener("click", async () => {
    $("action-error").textContent = "";
    try {
      await api("POST", "/api/compare/action", { action: button.dataset.action });
      refresh();
    } catch (err) {
      $("action-error").textContent = err.message;
    }
  });
}

$("btn-stop").addEventListener("click", async () => {
  try { await api("POST", "/api/compare/stop", {}); } catch (err) { $("action-error").textContent = err.message; }
  refresh();
});

refresh();
