/* Lesson progress in this browser (localStorage): which goals were reached, what the machine
 * measured then, what was predicted. Nothing of it goes to the server; a broken or foreign
 * entry reads as no progress. */

const STORE = "vmemlab.lessons";
const MAX_KEY = 64;

function readAll() {
  try {
    const data = JSON.parse(localStorage.getItem(STORE) || "{}");
    return data && typeof data === "object" && !Array.isArray(data) ? data : {};
  } catch (err) { return {}; }
}

/** {reached: [index], total, measured: {index: n}, predicted: {index: text}, best} of `key`. */
export function load(key) {
  const entry = readAll()[String(key).slice(0, MAX_KEY)];
  const ok = entry && typeof entry === "object";
  return {
    reached: ok && Array.isArray(entry.reached) ? entry.reached.filter(Number.isInteger) : [],
    total: ok && Number.isInteger(entry.total) ? entry.total : 0,
    best: ok && Number.isInteger(entry.best) ? entry.best : 0,
    measured: ok && entry.measured && typeof entry.measured === "object" ? entry.measured : {},
    predicted: ok && entry.predicted && typeof entry.predicted === "object" ? entry.predicted : {},
  };
}

export function save(key, entry) {
  const all = readAll();
  entry.best = Math.max(entry.best || 0, entry.reached.length);
  all[String(key).slice(0, MAX_KEY)] = entry;
  try { localStorage.setItem(STORE, JSON.stringify(all)); } catch (err) { /* full or off */ }
}

/** A fresh machine: this attempt starts from nothing (the best result stays). */
export function restart(key) {
  const old = load(key);
  save(key, { reached: [], total: old.total, best: old.best, measured: {}, predicted: {} });
}
