/* The live page's controls: run/pause/step/speed, reboots, the RFC option, guest actions,
 * save/load, share, the new-machine dialog. Each sends one socket event or request. */

import { $ } from "./dom.js";
import { hex, mib } from "./format.js";
import { notice, showError } from "./messages.js";
import { post, send, socket } from "./transport.js";

const result = (r) => { if (r && r.message) $("action-result").textContent = r.message; };

/** What a keyframe says about the controls: the RFC option, whether step/speed exist. */
export function setCapabilities(k) {
  $("rfc").checked = !!k.rfc_shrink_on_reboot;
  $("btn-step").disabled = !k.capabilities.step;
  $("btn-step").title = k.capabilities.step ? "Single-step the guest" : "single-step needs engine support (Machine.step)";
  $("speed").disabled = !k.capabilities.speed;
  $("speed").title = k.capabilities.speed ? "Guest speed" : "speed control needs engine support (Machine.set_speed)";
}

let allocKey = "";
/** The guest's allocations in the free/verify/touch picker (rebuilt only when they change). */
export function updateAllocations(list) {
  const key = JSON.stringify(list);
  if (key === allocKey) return; allocKey = key;
  const sel = $("alloc-list"); const keep = sel.value; sel.textContent = "";
  const all = document.createElement("option"); all.value = "0"; all.textContent = "all allocations"; sel.appendChild(all);
  for (const a of list) {
    const o = document.createElement("option"); o.value = a.id;
    o.textContent = `#${a.id} ${mib(a.pages * 4096)} ${a.unmovable ? "unmovable" : "movable"}`; sel.appendChild(o);
  }
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "0";
}

// pace changes sent and not yet answered: until then a view from before the change must not
// flip the control the user just set back (the answer then sets it from the server's state)
let paceChanges = 0;

/** Send a pace change; the controls follow the server's answer, whatever it is. */
async function sendPace(data, onOk) {
  paceChanges += 1;
  try {
    const res = await send("pace", data, onOk);
    paceChanges -= 1;
    if (res && res.ok) setPace(res);
  } catch (err) { paceChanges -= 1; throw err; }
}

/** The teaching pace's controls follow the server (a view, a keyframe or a `pace` event). */
export function setPace(p) {
  const box = $("pace-box").dataset;
  box.pace = p.pace_ms; box.stepping = p.stepping ? "1" : "0";
  if (p.answered !== undefined) box.answered = p.answered;
  if (paceChanges > 0) return;  // a change is on its way: its answer sets the controls
  const sel = $("pace"), ms = String(p.pace_ms);
  if (![...sel.options].some((o) => o.value === ms)) {
    const o = document.createElement("option"); o.value = ms; o.textContent = `${ms} ms`; sel.appendChild(o);
  }
  if (document.activeElement !== sel) sel.value = ms;
  $("pause-after-reset").checked = !!p.pause_after_reset;
}

function initPace() {
  $("pace").addEventListener("change", () => sendPace({ pace_ms: +$("pace").value },
    (r) => notice(r.pace_ms ? `teaching pace: each request held ${r.pace_ms} ms` : "full speed")));
  $("pause-after-reset").addEventListener("change", () => sendPace({ pause_after_reset: $("pause-after-reset").checked }));
  $("btn-step-request").addEventListener("click", () => sendPace({ step: true },
    () => notice("running until the next request is answered…")));
}

function initMachineControls() {
  $("btn-pause").addEventListener("click", () => send("run", { action: "pause" }));
  $("btn-resume").addEventListener("click", () => send("run", { action: "resume" }));
  $("btn-step").addEventListener("click", () => send("run", { action: "step", instructions: 1 },
    (r) => notice(`stepped ${r.instructions} instruction(s): pc ${hex(r.pc)}`)));
  $("speed").addEventListener("change", () => send("speed", { factor: +$("speed").value }));
  $("btn-reboot").addEventListener("click", () => send("reboot", { mode: "reset" }, () => notice("system_reset")));
  $("btn-reboot-nodriver").addEventListener("click", () => send("reboot", { mode: "no-driver" }, () => notice("rebooting into a guest without virtio_mem")));
  $("btn-reboot-driver").addEventListener("click", () => send("reboot", { mode: "driver" }, () => notice("rebooting with the driver")));
  $("rfc").addEventListener("change", () => send("rfc_shrink_on_reboot", { enabled: $("rfc").checked },
    () => notice("new machine started with RFC shrink-on-reboot " + ($("rfc").checked ? "on" : "off"))));
}

function initGuestActions() {
  $("alloc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("action-result").textContent = "allocating…";
    send("guest", { action: "alloc", size: +$("alloc-size").value, unmovable: $("alloc-kind").value === "unmovable", target: $("alloc-target").value || null }, result)
      .then((r) => {
        if (r && r.ok) return;
        // never leave "allocating…" behind: say what failed, and what ENOMEM means
        const why = (r && r.error) || "no answer from the server";
        $("action-result").textContent = "allocation failed: " + why +
          (/ENOMEM|out of memory|Cannot allocate/i.test(why) ? " — the guest has no free pages of that kind left (ENOMEM): plug more memory (raise requested-size) or free an allocation" : "");
      });
  });
  $("btn-free").addEventListener("click", () => send("guest", { action: "free", id: +$("alloc-list").value }, result));
  $("btn-verify").addEventListener("click", () => send("guest", { action: "verify", id: +$("alloc-list").value }, result));
  $("btn-touch").addEventListener("click", () => send("guest", { action: "touch", id: +$("alloc-list").value }, result));
  $("btn-dump").addEventListener("click", () => { $("action-result").textContent = "dumping…"; send("guest", { action: "dump" }, result); });
  $("btn-rogue").addEventListener("click", () => send("guest", { action: "rogue_write", device: $("rogue-device").value }, result));
}

function initLoad() {
  $("load-file").addEventListener("change", async () => {
    const f = $("load-file").files[0]; if (!f) return;
    const fd = new FormData(); fd.append("file", f);
    notice("loading " + f.name + "…");
    try {
      const { response: r, json: j } = await post("/api/machine/state", { body: fd });
      if (!j || !j.ok) showError("load failed: " + ((j && j.error) || r.status)); else notice("loaded " + f.name);
    } catch (err) { showError("load failed: " + err); }
    $("load-file").value = "";
  });
}

// share: store the live recording on the server, show the link (copyable)
function initShare() {
  $("btn-share").addEventListener("click", async () => {
    const btn = $("btn-share"); btn.disabled = true; notice("sharing…");
    try {
      const { response: r, json: j } = await post("/share", {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ session_recording: true }),
      });
      if (!r.ok || !j || !j.url) { showError("share failed: " + ((j && j.error) || r.status)); return; }
      const url = new URL(j.url, window.location.href).href;
      $("share-link").value = url; $("share-open").href = url;
      $("share-status").textContent = ""; $("share-box").hidden = false;
      notice("shared: " + url);
      $("share-link").focus(); $("share-link").select();
    } catch (err) {
      showError("share failed: " + err);
    } finally { btn.disabled = false; }
  });
  $("share-copy").addEventListener("click", async () => {
    const link = $("share-link");
    try { await navigator.clipboard.writeText(link.value); $("share-status").textContent = "copied"; }
    catch (err) { link.focus(); link.select(); $("share-status").textContent = "press Ctrl+C to copy"; }
  });
}

function initNewMachine() {
  const dlg = $("new-dialog");
  $("btn-new").addEventListener("click", () => { $("new-error").textContent = ""; dlg.showModal(); });
  $("new-cancel").addEventListener("click", () => dlg.close());
  $("new-default").addEventListener("click", () => send("new_machine", { preset: "default" }, () => dlg.close()));
  $("new-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const form = {
      boot_ram: +f.boot_ram.value, nodes: +f.nodes.value, device_size: +f.device_size.value,
      requested_size: +f.requested_size.value, block_size: +f.block_size.value,
      unplugged_inaccessible: f.unplugged_inaccessible.checked, rfc_shrink_on_reboot: f.rfc_shrink_on_reboot.checked,
    };
    socket.emit("new_machine", form, (r) => {
      if (r && r.ok) { dlg.close(); notice("new machine started"); } else $("new-error").textContent = (r && r.error) || "failed";
    });
  });
}

export function initControls() {
  initMachineControls();
  initPace();
  initGuestActions();
  initLoad();
  initShare();
  initNewMachine();
}
