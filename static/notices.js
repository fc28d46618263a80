/* The live page's standing notices: the student's class, this machine's memory budget, and
 * what became of a machine the server reclaimed or lost (with "restore last save" when the
 * server kept one). Listens to the page's own socket (static/transport.js); builds every
 * element from data. */

import { $, el } from "./dom.js";
import { mib } from "./format.js";
import { post, socket } from "./transport.js";

const box = $("notices");
const css = el("link", { rel: "stylesheet", href: "/static/class.css" });
document.head.append(css);

const classLine = el("span", { id: "class-line", class: "class-line" });
const budget = el("span", { id: "budget", class: "budget", title: "Host memory this machine's guest holds (resident), and the most the server lets one machine hold" });
const classNotice = el("span", { id: "class-notice", class: "class-notice", role: "status" });
box.append(classLine, budget, classNotice);

/** The per-machine memory budget (keyframe/view field `budget`). */
function showBudget(b) {
  if (!b) return;
  const parts = [];
  parts.push(b.machine_limit ? `memory budget: ${mib(b.resident)} of ${mib(b.machine_limit)} resident on this machine`
    : `${mib(b.resident)} resident on this machine`);
  if (b.server_limit) parts.push(`server: ${mib(b.server_resident)} of ${mib(b.server_limit)}`);
  budget.textContent = parts.join(" · ");
  budget.dataset.resident = String(b.resident);
  budget.dataset.limit = String(b.machine_limit);
  budget.classList.toggle("full", !!b.machine_limit && b.resident >= 0.9 * b.machine_limit);
}
socket.on("keyframe", (k) => showBudget(k.budget));
socket.on("view", (v) => showBudget(v.budget));

/** A reclaimed or lost machine: what happened, and the last save if the server kept one. */
async function showLost(text) {
  const old = $("machine-lost"); if (old) old.remove();
  const note = el("div", { id: "machine-lost", class: "lost", role: "alert" }, el("span", {}, text));
  const close = el("button", { type: "button", "aria-label": "Dismiss" }, "✕");
  close.addEventListener("click", () => note.remove());
  box.append(note);
  try {
    let j = null;
    for (let i = 0; i < 4; i++) { // the server writes the save as it closes the machine
      j = await (await fetch("/api/machine/last-save", { credentials: "same-origin" })).json();
      if (!j.ok || j.saved_at) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (j && j.ok && j.saved_at) {
      const when = new Date(j.saved_at * 1000).toLocaleTimeString();
      const restore = el("button", { type: "button", id: "btn-restore-save" }, `restore last save (${when})`);
      restore.addEventListener("click", async () => {
        restore.disabled = true; restore.textContent = "restoring…";
        const { json } = await post("/api/machine/last-save/restore", { headers: {} });
        if (json && json.ok) { note.textContent = "your last save was restored"; note.dataset.restored = "1"; }
        else { restore.disabled = false; restore.textContent = "restore failed: " + ((json && json.error) || "no answer"); }
      });
      note.append(" ", restore);
    }
  } catch (err) { /* no offer then */ }
  note.append(" ", close);
}
socket.on("server_error", (e) => { if (e && e.kind === "machine_lost") showLost(e.error); });

/** The teacher did something to every machine: say so; a pushed lesson opens its page. */
socket.on("class_notice", (n) => {
  classNotice.textContent = n.text;
  classNotice.dataset.kind = n.kind;
  if (n.url && typeof n.url === "string" && n.url.startsWith("/") && !n.url.startsWith("//")) {
    const top = window.top || window;
    let here = "";
    try { here = top.location.pathname; } catch (err) { here = ""; }
    if (here !== n.url) top.location.assign(n.url);
  }
});

async function showClass() {
  try {
    const j = await (await fetch("/class/me", { credentials: "same-origin" })).json();
    if (j.ok && j.class) {
      classLine.textContent = `class ${j.class.code} (${j.class.title}) as ${j.class.name}: your teacher sees this machine, the other students do not `;
      classLine.dataset.code = j.class.code;
      const leave = el("button", { type: "button", id: "btn-leave-class" }, "leave the class");
      leave.addEventListener("click", async () => {
        const { json } = await post("/class/leave", { headers: {} });
        if (json && json.ok) { classLine.textContent = "you left the class"; delete classLine.dataset.code; }
      });
      classLine.append(leave);
    } else {
      classLine.append(el("a", { href: "/class/join" }, "join a class"));
    }
  } catch (err) { /* no class line */ }
}
showClass();
