/* vmemlab block grid: one <canvas> per device, fed by a Uint8Array of state codes per view.
 *
 * Codes, colours and patterns are the server's block-state table (block-states.js): each
 * state has a colour from the Okabe–Ito palette (colour-blind safe) *and* a pattern. Deltas
 * only mark cells dirty; all grids are drawn together once per animation frame, so thousands
 * of changes per second cost one draw. The live page and the replay share it.
 * After each draw the canvas carries data-plugged / data-blocks / data-seq describing exactly
 * what was drawn (tests and benchmarks read those, not the network).
 */
import { CODE, PLUGGED, STATES, state } from "./block-states.js";

/* Flashes drawn over a block for a moment (events, not states: they are not in the table). */
export const FLASH = {
  zero: { color: "#009E73", label: "read of the zero page", ms: 900 },
  violation: { color: "#CC79A7", label: "blocked write (violation)", ms: 2500 },
  pulse: { color: "#000000", label: "just changed", ms: 450 },
};

/** Frame statistics (the render benchmark reads them: benchmarks/web_render.py). */
export const stats = { latencies: [], frames: 0, drawMs: [], lastFrame: 0 };

function makeTile(code, cell, dpr) {
  const px = Math.max(1, Math.round(cell * dpr));
  const c = document.createElement("canvas");
  c.width = c.height = px;
  const g = c.getContext("2d");
  const s = state(code).style;
  const gap = cell >= 6 ? Math.max(1, Math.round(dpr)) : 0;
  const w = px - gap;
  g.fillStyle = s.fill;
  g.fillRect(0, 0, w, w);
  if (s.outline) { g.strokeStyle = s.outline; g.lineWidth = Math.max(1, dpr); g.strokeRect(0.5 * dpr, 0.5 * dpr, w - dpr, w - dpr); }
  if (s.half) { g.fillStyle = s.half; g.fillRect(0, w / 2, w, w / 2); }
  if (s.dot && w >= 6) { g.fillStyle = s.dot; g.beginPath(); g.arc(w / 2, w / 2, w / 6, 0, 2 * Math.PI); g.fill(); }
  if (s.ring && w >= 6) { g.strokeStyle = s.ring; g.lineWidth = Math.max(1, dpr); g.strokeRect(w / 4, w / 4, w / 2, w / 2); }
  if (s.hatch) {
    g.strokeStyle = s.hatch; g.lineWidth = Math.max(1, dpr);
    g.strokeRect(0.5, 0.5, w - 1, w - 1);
    g.beginPath(); g.moveTo(0, w); g.lineTo(w, 0); g.stroke();
  }
  if (s.cross) { g.strokeStyle = s.cross; g.lineWidth = Math.max(1, dpr); g.beginPath(); g.moveTo(0, 0); g.lineTo(w, w); g.moveTo(w, 0); g.lineTo(0, w); g.stroke(); }
  return c;
}

/* An aggregated cell (several blocks, for large devices) shows its most telling block: in
 * flight, then data the guest cannot move, then data, then plugged, then unplugged. */
const RANK = new Uint8Array(256);
[["UNPLUGGED", 0], ["OUTSIDE_USABLE", 1], ["PLUGGED", 2], ["PLUGGED_FREE", 2], ["HOST_PLUGGED_EMPTY", 2],
  ["PLUGGED_MOVABLE", 3], ["HOST_PARTLY_RESIDENT", 3], ["HOST_RESIDENT", 4], ["PLUGGED_UNMOVABLE", 5],
  ["HOST_UNPLUGGED_RESIDENT", 6], ["IN_FLIGHT", 7]].forEach(([key, rank]) => { if (key in CODE) RANK[CODE[key]] = rank; });
const MAX_CELLS = 2048; // more blocks than this: cells of several blocks (zoom shows each block)

const FLASH_KINDS = ["", "zero", "violation", "pulse"]; // index 0: no flash
const FLASH_ZERO = FLASH_KINDS.indexOf("zero");
const FLASH_VIOLATION = FLASH_KINDS.indexOf("violation");
const FLASH_PULSE = FLASH_KINDS.indexOf("pulse");
const LEVELS = 8;

function tilePixels(tile) {
  const g = tile.getContext("2d");
  return new Uint32Array(g.getImageData(0, 0, tile.width, tile.height).data.buffer.slice(0));
}

function flashTile(base, kind, level, px, dpr) {
  const c = document.createElement("canvas");
  c.width = c.height = px;
  const g = c.getContext("2d");
  g.drawImage(base, 0, 0);
  const spec = FLASH[kind];
  g.globalAlpha = (level + 1) / LEVELS;
  if (kind === "pulse") {
    g.strokeStyle = spec.color; g.lineWidth = Math.max(1, dpr * 1.5);
    g.strokeRect(1, 1, px - 3, px - 3);
  } else {
    g.fillStyle = spec.color; g.fillRect(0, 0, px, px);
    if (kind === "violation") { g.globalAlpha = 1; g.strokeStyle = "#000"; g.lineWidth = 2 * dpr; g.strokeRect(1, 1, px - 2, px - 2); }
  }
  return c;
}

export class BlockGrid {
  /* views: the views this grid keeps codes for (block-states.js VIEWS), the first shown.
   * fitWidth: at most 128 columns stretched to the width (the replay), instead of a cell
   * size chosen by the block count (the live page). */
  constructor(canvas, nbBlocks, { views = ["guest", "host"], fitWidth = false } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.nb = nbBlocks;
    this.codes = Object.fromEntries(views.map((v) => [v, new Uint8Array(nbBlocks)]));
    this.mode = views[0];
    this.fitWidth = fitWidth;
    // flashes as typed arrays: kind (index in FLASH_KINDS), start time; a list of active cells
    this.flashKind = new Uint8Array(nbBlocks);
    this.flashStart = new Float64Array(nbBlocks);
    this.flashList = [];
    this.dirtyAll = true;
    this.dirtyFlag = new Uint8Array(nbBlocks);
    this.dirtyList = new Int32Array(nbBlocks);
    this.dirtyCount = 0;
    this.pendingWall = 0;
    this.seq = 0;
    this.rowBlocks = 0; // device blocks per Linux memory block: one row each (0: unknown)
    this.labelWidth = 0; // pixels the row labels beside the canvas take
    this.onLayout = null; // called after each layout (the row labels follow the cell size)
    this.agg = 1; // device blocks per cell
    this.zoomed = false; // every block its own cell, however many there are
    this.layout();
  }

  /** Rows of `blocks` device blocks: one per Linux memory block (the guest's own size). */
  setRowBlocks(blocks, labelWidth) {
    if (blocks === this.rowBlocks && labelWidth === this.labelWidth) return;
    this.rowBlocks = blocks; this.labelWidth = labelWidth;
    this.layout();
  }

  /** Each block its own cell (true), or cells of several blocks on a large device. */
  setZoom(zoomed) { if (zoomed !== this.zoomed) { this.zoomed = zoomed; this.layout(); } }

  layout() {
    const width = Math.max(200, ((this.canvas.parentElement || this.canvas).clientWidth || 600) - this.labelWidth);
    let n = this.nb;
    let cell, cols;
    this.agg = 1;
    this.mbPerRow = 1; // Linux memory blocks per row
    if (this.rowBlocks && this.rowBlocks * 3 <= width) {
      // Linux's structure: one row per memory block (a block-size change keeps the rows);
      // a large device gets cells of several blocks and rows of several memory blocks
      if (!this.zoomed && n > MAX_CELLS) {
        while (this.agg < this.rowBlocks && Math.ceil(this.nb / this.agg) > MAX_CELLS) this.agg *= 2;
        n = Math.ceil(this.nb / this.agg);
        const perMb = Math.max(1, this.rowBlocks / this.agg);
        while (this.mbPerRow * perMb < 64 && this.mbPerRow * this.rowBlocks < this.nb) this.mbPerRow *= 2;
        cols = Math.min(n, this.mbPerRow * perMb);
      } else {
        cols = Math.min(n, this.rowBlocks);
      }
      cell = Math.max(3, Math.min(12, Math.floor(width / cols), n <= 4096 ? 12 : 7));
    } else if (this.fitWidth) {
      cols = Math.max(1, Math.min(n, 128));
      cell = Math.max(2, Math.floor(width / cols));
    } else {
      cell = n <= 1024 ? 16 : n <= 4096 ? 9 : n <= 8192 ? 7 : 5;
      cols = Math.min(n, Math.max(8, Math.floor(width / cell)));
    }
    this.cell = cell;
    this.cols = cols;
    this.ncells = n;
    this.rows = Math.ceil(n / cols);
    this.dpr = window.devicePixelRatio || 1;
    const px = Math.max(1, Math.round(cell * this.dpr));
    this.px = px;
    const w = cols * cell, h = this.rows * cell;
    this.canvas.width = cols * px;
    this.canvas.height = this.rows * px;
    this.canvas.style.width = w + "px";
    this.canvas.style.height = h + "px";
    this.image = this.ctx.createImageData(this.canvas.width, this.canvas.height);
    this.buf = new Uint32Array(this.image.data.buffer);
    this.buf.fill(0xffffffff);
    this.tiles = [];
    this.flashTiles = [];
    for (const code of STATES.keys()) {
      const base = makeTile(code, cell, this.dpr);
      this.tiles[code] = tilePixels(base);
      const perKind = [null];
      for (let k = 1; k < FLASH_KINDS.length; k++) {
        const levels = [];
        for (let l = 0; l < LEVELS; l++) levels.push(tilePixels(flashTile(base, FLASH_KINDS[k], l, px, this.dpr)));
        perKind.push(levels);
      }
      this.flashTiles[code] = perKind;
    }
    this.dirtyAll = true;
    this.flashKind.fill(0); this.flashList = []; // flashes were of the old cells
    this.canvas.dataset.cols = cols;
    this.canvas.dataset.agg = this.agg;
    if (this.onLayout) this.onLayout(this);
    BlockGrid.schedule();
  }

  setMode(mode) { if (mode !== this.mode) { this.mode = mode; this.dirtyAll = true; BlockGrid.schedule(); } }

  setCodes(view, codes) {
    if (codes.length !== this.nb) return;
    this.codes[view].set(codes);
    if (view === this.mode) { this.dirtyAll = true; BlockGrid.schedule(); }
  }

  _dirty(block) {
    const i = this.agg === 1 ? block : (block / this.agg) | 0;
    if (!this.dirtyFlag[i]) { this.dirtyFlag[i] = 1; this.dirtyList[this.dirtyCount++] = i; }
  }

  /** The code drawn for the cell that holds `block` (the hover's text). */
  cellCode(block) { return this._code(this.codes[this.mode], (block / this.agg) | 0); }

  /** The code cell `c` draws: its block's, or the most telling of its blocks. */
  _code(codes, c) {
    if (this.agg === 1) return codes[c];
    const end = Math.min(this.nb, (c + 1) * this.agg);
    let best = codes[c * this.agg];
    for (let i = c * this.agg + 1; i < end; i++) if (RANK[codes[i]] > RANK[best]) best = codes[i];
    return best;
  }

  setRange(view, first, count, code, wall) {
    const arr = this.codes[view];
    const end = Math.min(this.nb, first + count);
    const shown = view === this.mode;
    for (let i = Math.max(0, first); i < end; i++) {
      if (arr[i] !== code) { arr[i] = code; if (shown) this._dirty(i); }
    }
    if (wall && shown) this.pendingWall = Math.max(this.pendingWall, wall);
    BlockGrid.schedule();
  }

  flash(first, count, kind, now) {
    const k = FLASH_KINDS.indexOf(kind); if (k <= 0) return;
    if (now === undefined) now = performance.now();
    const agg = this.agg;
    const end = Math.ceil(Math.min(this.nb, first + Math.min(count, this.nb)) / agg);
    for (let i = Math.floor(Math.max(0, first) / agg); i < end; i++) {
      // a violation or zero-page flash is not hidden by a mere "changed" pulse
      if (this.flashKind[i] && this.flashKind[i] !== FLASH_PULSE && k === FLASH_PULSE) continue;
      if (!this.flashKind[i]) this.flashList.push(i);
      this.flashKind[i] = k; this.flashStart[i] = now;
    }
    BlockGrid.schedule();
  }

  cellAt(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    const col = Math.floor((clientX - r.left) / this.cell);
    const row = Math.floor((clientY - r.top) / this.cell);
    if (col < 0 || row < 0 || col >= this.cols) return -1;
    const i = row * this.cols + col;
    return i < this.ncells ? i * this.agg : -1; // a cell's first block
  }

  _blit(i, tile) {
    const px = this.px, W = this.canvas.width, buf = this.buf;
    let o = Math.floor(i / this.cols) * px * W + (i % this.cols) * px, k = 0;
    for (let y = 0; y < px; y++, o += W) for (let x = 0; x < px; x++) buf[o + x] = tile[k++];
  }

  draw(now) {
    const codes = this.codes[this.mode];
    let drew = false;
    if (this.dirtyAll) {
      for (let i = 0; i < this.ncells; i++) this._blit(i, this.tiles[this._code(codes, i)] || this.tiles[CODE.UNPLUGGED]);
      for (let j = 0; j < this.dirtyCount; j++) this.dirtyFlag[this.dirtyList[j]] = 0;
      this.dirtyAll = false; this.dirtyCount = 0; drew = true;
    } else if (this.dirtyCount) {
      for (let j = 0; j < this.dirtyCount; j++) {
        const i = this.dirtyList[j]; this.dirtyFlag[i] = 0;
        this._blit(i, this.tiles[this._code(codes, i)] || this.tiles[CODE.UNPLUGGED]);
      }
      this.dirtyCount = 0; drew = true;
    }
    let violations = 0, zeros = 0, keep = 0;
    const list = this.flashList;
    for (let j = 0; j < list.length; j++) {
      const i = list[j], k = this.flashKind[i];
      if (!k) continue;
      const spec = FLASH[FLASH_KINDS[k]];
      const age = now - this.flashStart[i];
      drew = true;
      const code = this._code(codes, i);
      if (age >= spec.ms) { this.flashKind[i] = 0; this._blit(i, this.tiles[code] || this.tiles[CODE.UNPLUGGED]); continue; }
      const level = Math.min(LEVELS - 1, Math.floor((1 - age / spec.ms) * LEVELS));
      this._blit(i, (this.flashTiles[code] || this.flashTiles[CODE.UNPLUGGED])[k][level]);
      if (k === FLASH_VIOLATION) violations++; else if (k === FLASH_ZERO) zeros++;
      list[keep++] = i;
    }
    list.length = keep;
    if (drew) {
      this.ctx.putImageData(this.image, 0, 0);
      let plugged = 0;
      for (let i = 0; i < this.nb; i++) plugged += PLUGGED[codes[i]];
      const ds = this.canvas.dataset;
      ds.plugged = plugged; ds.blocks = this.nb; ds.mode = this.mode; ds.seq = this.seq;
      ds.frames = (+ds.frames || 0) + 1;
      ds.flashViolation = violations; ds.flashZero = zeros;
      if (this.pendingWall) {
        stats.latencies.push(Date.now() - this.pendingWall * 1000);
        if (stats.latencies.length > 20000) stats.latencies.splice(0, 10000);
        this.pendingWall = 0;
      }
    }
    return this.flashList.length > 0;
  }

  /** Draw now, not at the next animation frame (the replay draws as it seeks). */
  drawNow() { this.draw(performance.now()); }

  static schedule() {
    if (BlockGrid._raf) return;
    BlockGrid._raf = requestAnimationFrame(BlockGrid._frame);
  }

  static _frame(now) {
    BlockGrid._raf = 0;
    const t0 = performance.now();
    let again = false;
    for (const g of BlockGrid.all) if (g.canvas.isConnected && g.draw(now)) again = true;
    const dt = performance.now() - t0;
    stats.frames++; stats.lastFrame = now;
    stats.drawMs.push(dt); if (stats.drawMs.length > 5000) stats.drawMs.splice(0, 2500);
    if (again) BlockGrid.schedule();
  }
}
BlockGrid.all = new Set(); // the grids the animation frame draws
BlockGrid._raf = 0;
