/* Draw a /compare grid: rows of cells, one state code per cell, on one <canvas> per row.
 *
 * The codes are webapp/compare_view.py's CELLS; colours are Okabe-Ito (colour-blind safe)
 * and the "given back" and "pinned" states carry a pattern as well. After drawing, the canvas
 * carries data-cells and data-returned (what was drawn), which tests read.
 */
export const PALETTE = {
  0: { fill: "#ffffff", outline: "#9a9a9a" },          // empty slot
  1: { fill: "#0072B2" },                              // ZONE_MOVABLE
  2: { fill: "#56B4E9" },                              // ZONE_NORMAL
  3: { fill: "#e4e4e4", cross: "#9a9a9a" },            // given back
  4: { fill: "#F0E442" },                              // partly given back
  5: { fill: "#D55E00", dot: "#ffffff" },              // pinned
  6: { fill: "#d5ebf7", outline: "#0072B2" },          // offline
  7: { fill: "#009E73" },                              // RAM the guest has
};

export function decodeCells(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}

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
    const s = PALETTE[code] || PALETTE[0];
    const w = cell - 1;
    g.fillStyle = s.fill;
    g.fillRect(x, y, w, w);
    if (s.outline) { g.strokeStyle = s.outline; g.lineWidth = 1; g.strokeRect(x + 0.5, y + 0.5, w - 1, w - 1); }
    if (s.cross) { g.strokeStyle = s.cross; g.beginPath(); g.moveTo(x + 1, y + 1); g.lineTo(x + w - 1, y + w - 1); g.stroke(); }
    if (s.dot) { g.fillStyle = s.dot; g.fillRect(x + w / 3, y + w / 3, w / 3, w / 3); }
    if (code === 3) returned++;
  });
  canvas.dataset.cells = String(cells.length);
  canvas.dataset.returned = String(returned);
}
