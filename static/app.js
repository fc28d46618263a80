/* vmemlab live page, the entry module: Socket.IO events → model → grids, register map,
 * logs, charts; the controls. Each concern is its own module (docs/architecture.md). */

import { $ } from "./dom.js";
import { initControls } from "./controls.js";
import { renderLegend } from "./legend.js";
import { onBatch, onKeyframe, onView, setRunstate } from "./live.js";
import { initMessages, notice, showError } from "./messages.js";
import { model } from "./model.js";
import { initMonitor } from "./monitor.js";
import { initRegisters } from "./registers.js";
import { socket } from "./transport.js";

socket.on("keyframe", onKeyframe);
socket.on("batch", onBatch);
socket.on("view", onView);
socket.on("server_error", (e) => showError(e.error));
// the machine stopped under the page (the server closed it): say so, offer a new one
socket.on("machine_closed", (e) => { showError(e.error); setRunstate("closed"); });
socket.on("connect", () => notice("connected"));
socket.on("disconnect", () => { notice("disconnected — reconnecting…"); setRunstate("offline"); });

document.querySelectorAll('input[name="view"]').forEach((r) => r.addEventListener("change", () => {
  model.mode = r.value;
  for (const d of model.devices.values()) d.grid.setMode(model.mode);
  renderLegend($("legend"), model.mode);
}));
window.addEventListener("resize", () => { for (const d of model.devices.values()) d.grid.layout(); });

initMessages();
initRegisters();
initControls();
initMonitor();
renderLegend($("legend"), model.mode);
