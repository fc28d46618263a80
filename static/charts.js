/* The charts (Plotly, loaded on demand once the grids are drawn): requested vs plugged per
 * device, host memory, memory per NUMA node. `Plotly` is the vendor script's global. */

import { MiB } from "./format.js";
import { showError } from "./messages.js";
import { model } from "./model.js";
import { socket } from "./transport.js";

const chartLayout = (title, ytitle) => ({
  title: { text: title, font: { size: 16 } }, margin: { l: 60, r: 10, t: 36, b: 64 },
  xaxis: { title: { text: "" }, ticksuffix: " s" }, yaxis: { title: { text: ytitle }, rangemode: "tozero" },
  legend: { orientation: "h", x: 0, y: -0.12, yanchor: "top" },
  font: { size: 13 }, uirevision: "keep",
});
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
const config = () => ({ displayModeBar: false, responsive: true });
const MAX_POINTS = 900;

let plotlyRequested = false, ready = false, lastNuma = null, numaKey = "";
// the experimental autoscaler's decisions (docs/extensions.md): markers on "requested vs plugged"
const decisions = { x: [], y: [], text: [] };
let lastT = 0;
const decisionTrace = () => ({
  name: "autoscaler decisions (vmemlab experiment)", x: decisions.x, y: decisions.y,
  text: decisions.text, mode: "markers", hovertemplate: "%{text}<extra></extra>",
  marker: { symbol: "diamond", size: 11, color: "#000000" },
});

/** Draw every chart from the model's series (after a keyframe). */
export function initCharts() {
  if (!window.Plotly) {
    // charts come second: load Plotly (4.8 MB, local) only once the grids are drawn
    if (!plotlyRequested) {
      plotlyRequested = true;
      const tag = document.createElement("script");
      tag.src = document.body.dataset.plotlySrc; tag.async = true;
      tag.onload = () => initCharts();
      tag.onerror = () => showError("could not load the chart library (static/vendor/plotly.min.js)");
      document.head.appendChild(tag);
    }
    return;
  }
  const s = model.series;
  const sizes = [];
  model.order.forEach((id, i) => {
    sizes.push({ name: id + " requested", x: s.map((p) => p.t), y: s.map((p) => (p.devices[id] || [0, 0])[0] / MiB), mode: "lines", line: { dash: "dash", color: PALETTE[i % 8], shape: "hv" } });
    sizes.push({ name: id + " plugged", x: s.map((p) => p.t), y: s.map((p) => (p.devices[id] || [0, 0])[1] / MiB), mode: "lines", line: { color: PALETTE[i % 8], shape: "hv" } });
  });
  sizes.push(decisionTrace());
  Plotly.react("chart-sizes", sizes, chartLayout("requested vs plugged", "MiB"), config());
  Plotly.react("chart-host", [
    { name: "this machine: host-resident", x: s.map((p) => p.t), y: s.map((p) => p.resident / MiB), mode: "lines", line: { color: "#0072B2" } },
    { name: "server process RSS", x: s.map((p) => p.t), y: s.map((p) => p.rss / MiB), mode: "lines", line: { color: "#999", dash: "dot" } },
  ], chartLayout("host memory (resident pages / RSS)", "MiB"), config());
  ready = true;
  if (lastNuma) updateNuma(lastNuma, true);
}

/** One more sample (from a view) on the time charts. */
export function addSample(p) {
  model.series.push(p);
  lastT = p.t;
  if (!ready) return;
  const xs = [], ys = [], idx = [];
  model.order.forEach((id, i) => {
    const v = p.devices[id] || [0, 0];
    xs.push([p.t], [p.t]); ys.push([v[0] / MiB], [v[1] / MiB]); idx.push(2 * i, 2 * i + 1);
  });
  Plotly.extendTraces("chart-sizes", { x: xs, y: ys }, idx, MAX_POINTS);
  Plotly.extendTraces("chart-host", { x: [[p.t], [p.t]], y: [[p.resident / MiB], [p.rss / MiB]] }, [0, 1], MAX_POINTS);
}

/** The NUMA bar chart from a view's nodes (redrawn only when they changed). */
export function updateNuma(v, force) {
  lastNuma = v;
  if (!ready) return;
  const key = JSON.stringify(v.nodes);
  if (!force && key === numaKey) return; numaKey = key;
  const x = v.nodes.map((n) => "node " + n.node_id);
  Plotly.react("chart-numa", [
    { type: "bar", name: "boot RAM", x, y: v.nodes.map((n) => n.boot_ram / MiB), marker: { color: "#999999" } },
    { type: "bar", name: "virtio-mem plugged", x, y: v.nodes.map((n) => n.plugged / MiB), marker: { color: "#0072B2" } },
  ], Object.assign(chartLayout("memory per NUMA node (info numa)", "MiB"), { barmode: "stack", xaxis: { ticksuffix: "" } }),
  config());
}

/** The autoscaler's decisions from a live batch: one marker each, at the new requested size,
 * at the time of the latest sample; its text says what it saw and why (built as data). */
export function addDecisions(batch) {
  const mine = ((batch && batch.events) || []).filter((e) => e.kind === "autoscale");
  if (!mine.length) return;
  for (const e of mine) {
    decisions.x.push(lastT); decisions.y.push(e.new / MiB);
    decisions.text.push(`${e.device}: ${e.action} to ${e.new / MiB} MiB (${e.reason}; ${e.source})`);
  }
  if (ready) Plotly.react("chart-sizes", document.getElementById("chart-sizes").data.slice(0, -1)
    .concat([decisionTrace()]), chartLayout("requested vs plugged", "MiB"), config());
}

socket.on("batch", addDecisions);
