/* The teacher's view: a device's block codes drawn small on a canvas (a thumbnail, or the
 * read-only view's larger grid), in the block states' fills (static/block-states.js).
 * The codes come from the server already reduced to at most a few hundred cells. */

import { state } from "./block-states.js";
import { b64 } from "./format.js";

/** Draw base64 `codes` on `canvas` (`cols` cells a row, square cells of `cell` px). */
export function drawCodes(canvas, codes, cols, cell) {
  const bytes = b64(codes || "");
  const rows = Math.max(1, Math.ceil(bytes.length / cols));
  const w = cols * cell; const h = rows * cell;
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  for (let i = 0; i < bytes.length; i++) {
    ctx.fillStyle = state(bytes[i]).style.fill;
    ctx.fillRect((i % cols) * cell, Math.floor(i / cols) * cell, cell - (cell > 3 ? 1 : 0),
      cell - (cell > 3 ? 1 : 0));
  }
  canvas.dataset.cells = String(bytes.length);
}
