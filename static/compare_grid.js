/* Draw a /compare grid: rows of cells, one block-state code per cell, on one <canvas> per row.
 *
 * The codes are the one block-state table's "compare" view (webapp/block_states.py, served
 * by static/block-states.js): colours and patterns come from there, as on the live page.
 * After drawing, the canvas carries data-cells and data-returned (what was drawn), which
 * tests read.
 */
import { CODE, state } from "./block-states.js";

export function decodeCells(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

/** The fill of a code (the legend's swatch). */
export const fillOf = (code) => state(code).style.fill;

export function drawRow(canvas, cells, { cell = 8, width = 256 } = {}) {
  const perRow = Math.max(1, Math.floor(width / cell));
  const rows = Math.max(1, Math.ceil(cells.length / perRow));
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(perRow * cell * dpr);
  canvas.height = Math.round(rows * cell * dpr);
  canvas.style.width = `${perRow * cell}px`;
  canvas.style.height = `${rows * cell}px`;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, perRow * cell, rows * cell);
  let returned = 0;
  cells.forEach((code, i) => {
    const x = (i % perRow) * cell;
    const y = Math.floor(i / perRow) * cell;
    const s = state(code).style;
    const w = cell - 1;
    g.fillStyle = s.fill;
    g.fillRect(x, y, w, w);
    if (s.outline) { g.strokeStyle = s.outline; g.lineWidth = 1; g.strokeRect(x + 0.5, y + 0.5, w - 1, w - 1); }
    if (s.cross) { g.strokeStyle = s.cross; g.beginPath(); g.moveTo(x + 1, y + 1); g.lineTo(x + w - 1, y + w - 1); g.stroke(); }
    if (s.dot) { g.fillStyle = s.dot; g.fillRect(x + w / 3, y + w / 3, w / 3, w / 3); }
    if (code === CODE.LAB_RETURNED) returned++;
  });
  canvas.dataset.cells = String(cells.length);
  canvas.dataset.returned = String(returned);
}
