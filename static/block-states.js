/* The block states: codes, names, labels, views and looks, as the server defines them.
 *
 * The one source is webapp/block_states.py; a page's template renders it once as a JSON data
 * element (templates/block_states.html, id "vmem-block-states"). No script defines a state of
 * its own: code that needs one names it by key (CODE.PLUGGED_FREE), never by number.
 */

const table = JSON.parse(document.getElementById("vmem-block-states").textContent);

/** Every state by code: {code, key, name, label, plugged, style: {fill, hatch?, ...}}. */
export const STATES = new Map(table.states.map((s) => [s.code, s]));
/** Codes by key, e.g. CODE.UNPLUGGED (frozen: a typo is an error, not undefined). */
export const CODE = Object.freeze(Object.fromEntries(table.states.map((s) => [s.key, s.code])));
/** The codes each view ("guest", "host", "device") can show, in the legend's order. */
export const VIEWS = Object.freeze(table.views);
/** 1 for a plugged state, by code (a lookup table for counting thousands of blocks). */
export const PLUGGED = new Uint8Array(Math.max(...STATES.keys()) + 1);
for (const s of STATES.values()) PLUGGED[s.code] = s.plugged ? 1 : 0;

const unknown = STATES.get(CODE.UNPLUGGED);
/** A state by code; an unknown code draws and reads as unplugged. */
export const state = (code) => STATES.get(code) || unknown;
