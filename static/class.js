/* The teacher's page: every student's machine as a live thumbnail card, and the class's
 * actions (push a lesson or scenario, pause all, resume all). Polls the roster once a
 * second; builds every element from data (textContent, never markup). */

import { $, el } from "./dom.js";
import { mib } from "./format.js";
import { drawCodes } from "./class_grid.js";

const root = $("class");
const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const STALE_S = 5; // a publication older than this: the machine is not on any server now
const cards = new Map();

async function command(body, label) {
  $("class-status").textContent = label + "…";
  try {
    const r = await fetch(root.dataset.command, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": CSRF },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    $("class-status").textContent = j.ok ? `${label}: sent to every student` : `${label} refused: ${j.error}`;
  } catch (err) { $("class-status").textContent = `${label} failed: ${err}`; }
}

function card(student) {
  let c = cards.get(student.id);
  if (c) return c;
  const name = el("h2", { class: "student-name" });
  const state = el("span", { class: "badge student-state" });
  const goals = el("p", { class: "student-goals" });
  const memory = el("p", { class: "student-memory" });
  const devices = el("div", { class: "student-devices" });
  const open = el("a", { class: "button student-open", href: `${location.pathname.replace(/\/teacher$/, "")}/students/${encodeURIComponent(student.id)}` }, "open read-only");
  const node = el("article", { class: "student-card", dataset: { student: student.id } },
    el("header", {}, name, state), devices, goals, memory, open);
  c = { node, name, state, goals, memory, devices, canvases: new Map() };
  cards.set(student.id, c);
  $("class-grid").append(node);
  return c;
}

function update(student, now) {
  const c = card(student);
  const s = student.status;
  c.name.textContent = student.name;
  const age = s ? now - s.t : Infinity;
  const offline = !s || age > STALE_S;
  const runstate = offline ? "offline" : (s.connected ? s.runstate : `${s.runstate}, page closed`);
  c.state.textContent = runstate;
  c.state.dataset.state = offline ? "offline" : s.runstate;
  c.node.dataset.runstate = offline ? "offline" : s.runstate;
  if (!s) { c.goals.textContent = "no machine yet"; return; }
  for (const d of s.devices || []) {
    let cv = c.canvases.get(d.id);
    if (!cv) {
      cv = el("canvas", { class: "thumb", title: d.id, dataset: { device: d.id } });
      c.canvases.set(d.id, cv);
      c.devices.append(el("figure", {}, cv, el("figcaption", {})));
    }
    drawCodes(cv, d.thumb, 32, 4);
    cv.dataset.plugged = String(d.plugged_size);
    cv.nextSibling.textContent = `${d.id} ${mib(d.plugged_size)} / ${mib(d.requested_size)}`;
  }
  const g = s.goals;
  c.goals.textContent = g ? `${g.title}: ${g.goals.filter((x) => x.reached).length}/${g.total} goals` : "no lesson";
  c.node.dataset.goals = g ? String(g.goals.filter((x) => x.reached).length) : "";
  const b = s.budget;
  c.memory.textContent = b ? `${mib(b.resident)} resident` + (b.machine_limit ? ` of ${mib(b.machine_limit)}` : "") : "";
  c.memory.classList.toggle("full", !!(b && b.machine_limit && b.resident >= b.machine_limit));
}

async function poll() {
  try {
    const r = await fetch(root.dataset.roster, { credentials: "same-origin" });
    const j = await r.json();
    if (j.ok) {
      const now = Date.now() / 1000;
      const seen = new Set();
      for (const s of j.students) { update(s, now); seen.add(s.id); }
      for (const [id, c] of cards) if (!seen.has(id)) { c.node.remove(); cards.delete(id); }
      $("class-count").textContent = String(j.students.length);
      $("class-lesson").textContent = j.lesson ? `pushed: ${j.lesson}` : "no lesson pushed";
      root.dataset.students = String(j.students.length);
    } else $("class-status").textContent = j.error;
  } catch (err) { /* the server restarts: keep polling */ }
  setTimeout(poll, 1000);
}

$("btn-push").addEventListener("click", () => {
  const [action, target] = $("push-item").value.split(/:(.*)/s);
  command({ action, target }, `push ${target}`);
});
$("btn-pause-all").addEventListener("click", () => command({ action: "pause" }, "pause all"));
$("btn-resume-all").addEventListener("click", () => command({ action: "resume" }, "resume all"));
poll();
