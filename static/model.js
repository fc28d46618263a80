/* The live page's model: what the server last said about the machine, per device.
 *
 * Server events: keyframe (everything), batch (engine events of one tick), view (snapshot:
 * the machine's state plus block codes and a chart sample; webapp/view_model.py). State
 * changes from events apply only if newer than the last snapshot (seq), so a snapshot and
 * the events around it never disagree.
 *
 * Test hook: browser tests and benchmarks read this object by importing this module in the
 * page (`await import("/static/model.js")`): the same instance the page uses; nothing is
 * put on `window`.
 */

export const model = {
  generation: -1, // the machine's generation: events of an older machine are dropped
  viewSeq: 0, // seq of the last snapshot applied
  logSeq: 0, // seq of the last event logged
  mode: "guest", // the view the grids show
  /* id -> {id, state (the view's device fields), grid, els, pendingReq, inflight, editing} */
  devices: new Map(),
  order: [], // device ids in the machine's order
  series: [], // chart samples
  runstate: "",
};
