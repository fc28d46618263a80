/* The presenter's prompt for vmemlab's experimental guest -> host requests (docs/extensions.md).
 *
 * Under the "ask" policy the device holds a guest's request ("need 16 MiB on node 0, because
 * ...") until someone answers. Every request arrives in the live batches as a
 * `guest_mem_request` event; a pending one shows the prompt, its answer (or a reset that
 * dropped it) hides it again. Text only through textContent: the reason is guest data.
 */

import { $ } from "./dom.js";
import { mib } from "./format.js";
import { send, socket } from "./transport.js";

let shown = null; // {device, seq} of the request the prompt shows

function describe(e) {
  const what = e.type === "offer" ? "offers back " : "needs ";
  return `${e.device}: the guest ${what}${mib(e.size)} on node ${e.node}` +
    (e.reason ? ` — “${e.reason}”` : "") + ` (requested size now ${mib(e.requested_size)})`;
}

function show(e) {
  shown = { device: e.device, seq: e.seq };
  $("guest-request-text").textContent = describe(e);
  $("guest-request").hidden = false;
}

function hide() {
  shown = null;
  $("guest-request").hidden = true;
}

export function onGuestRequests(batch) {
  for (const e of (batch && batch.events) || []) {
    if (e.kind !== "guest_mem_request") continue;
    if (e.decision === "pending") show(e);
    else if (shown && shown.device === e.device && shown.seq === e.seq) hide();
  }
}

function answer(verdict) {
  if (!shown) return;
  send("guest_request", { device: shown.device, answer: verdict }, hide);
}

/* After a keyframe (a new machine, a reconnect, a batch too big to send) ask what waits. */
function onKeyframe() {
  socket.timeout(10000).emit("guest_request", { pending: true }, (err, res) => {
    if (err || !res || !res.ok) return; // a machine without the queue: nothing to show
    const first = (res.pending || [])[0];
    if (first) show(Object.assign({ kind: "guest_mem_request" }, first));
    else if (shown) hide();
  });
}

socket.on("batch", onGuestRequests);
socket.on("keyframe", onKeyframe);
$("guest-request-grant").addEventListener("click", () => answer("grant"));
$("guest-request-deny").addEventListener("click", () => answer("deny"));
