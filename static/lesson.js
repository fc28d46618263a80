/* A lesson page: polls the goals of the session's machine once a second and marks them
 * done (a reached goal stays done), hands out hints one level at a time, checks the
 * learner's predictions against what the machine measured when the goal was reached, shows
 * each goal's debrief, and keeps the progress in this browser (progress.js).
 *
 * Every text shown comes from the page (rendered by the server, escaped) or is set with
 * textContent; the learner's answers are parsed by bounded regexes and never leave the page.
 */

import { sizeText } from "./format.js";
import * as progress from "./progress.js";
import { guardReplacing } from "./replace-warning.js";

const root = document.getElementById("lesson");
const key = root.dataset.key;
const goalItems = [...document.querySelectorAll("#goals li.goal")];
const total = goalItems.length;

const UNITS = { "": 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
const SIZE_RE = /^\s*(\d{1,12}(?:\.\d{1,4})?)\s*([kmgt]?)(?:i?b)?\s*$/i;
const COUNT_RE = /^\s*(\d{1,12})\s*$/;

/** The learner's answer as a number (bytes or a count); null if it is not one. */
export function parseAnswer(text, unit) {
  const s = String(text).slice(0, 32);
  if (unit === "count") {
    const m = COUNT_RE.exec(s);
    return m ? Number(m[1]) : null;
  }
  const m = SIZE_RE.exec(s);
  if (!m) return null;
  const suffix = m[2].toLowerCase();
  const value = Number(m[1]);
  // a size needs its unit (is "512" bytes or MiB?); only 0 is 0 in any unit
  if (!suffix && !/b$/i.test(s.trim()) && value !== 0) return null;
  return Math.round(value * UNITS[suffix]);
}

const show = (v, unit) => (unit === "count" ? String(v) : sizeText(v));

let state = progress.load(key);
if (new URLSearchParams(location.search).get("fresh") === "1") {
  progress.restart(key);
  state = progress.load(key);
  history.replaceState(null, "", location.pathname);
}
state.total = total;
const reached = new Set(state.reached.filter((i) => i >= 0 && i < total));

function predictionOf(li) {
  const text = state.predicted[li.dataset.index];
  return typeof text === "string" ? text : null;
}

function renderPrediction(li) {
  const form = li.querySelector("form.predict");
  if (!form) return;
  const result = li.querySelector(".predict-result");
  const i = li.dataset.index, unit = li.dataset.unit;
  const tolerance = Number(li.dataset.tolerance || 0);
  const text = predictionOf(li);
  const input = form.querySelector("input");
  if (text !== null) { input.value = text; input.disabled = true; form.querySelector("button").disabled = true; }
  if (!reached.has(Number(i))) {
    result.textContent = text !== null ? `Locked in: ${text}. Now make it happen.` : "";
    result.dataset.verdict = "";
    return;
  }
  input.disabled = true; form.querySelector("button").disabled = true;
  const measured = state.measured[i];
  if (typeof measured !== "number") { result.textContent = ""; return; }
  const got = show(measured, unit);
  if (text === null) {
    result.textContent = `The machine measured ${got}. (No prediction was locked in.)`;
    result.dataset.verdict = "none";
    return;
  }
  const guess = parseAnswer(text, unit);
  const right = guess !== null && Math.abs(guess - measured) <= tolerance;
  const within = tolerance ? ` (within ${show(tolerance, unit)})` : "";
  result.textContent = right
    ? `✓ You predicted ${show(guess, unit)}; the machine measured ${got}${within}.`
    : `✗ You predicted ${guess === null ? text : show(guess, unit)}; the machine measured ${got}. The debrief says why.`;
  result.dataset.verdict = right ? "right" : "wrong";
}

function render() {
  for (const li of goalItems) {
    const done = reached.has(Number(li.dataset.index));
    li.classList.toggle("done", done);
    li.querySelector(".mark").textContent = done ? "✓" : "○";
    const debrief = li.querySelector(".debrief");
    if (debrief) debrief.hidden = !done;
    if (done) li.querySelector(".why").textContent = "";
    renderPrediction(li);
  }
  document.getElementById("score").textContent = `${reached.size}/${total}`;
  root.dataset.reached = String(reached.size);
  const all = reached.size === total && total > 0;
  document.getElementById("all-done").hidden = !all;
  const next = document.getElementById("next-lesson");
  if (next) next.classList.toggle("ready", all);
}

function persist() {
  state.reached = [...reached].sort((a, b) => a - b);
  progress.save(key, state);
}

for (const li of goalItems) {
  const button = li.querySelector(".more-hint");
  if (button) {
    const count = Number(button.dataset.count);
    button.addEventListener("click", () => {
      const hidden = li.querySelector(".hint[hidden]");
      if (hidden) hidden.hidden = false;
      const shown = li.querySelectorAll(".hint:not([hidden])").length;
      li.dataset.hints = String(shown);
      button.textContent = shown >= count ? "no more hints" : shown === count - 1 ? "show the answer" : "another hint";
      button.disabled = shown >= count;
    });
  }
  const form = li.querySelector("form.predict");
  if (form) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = form.querySelector("input").value.trim().slice(0, 32);
      const result = li.querySelector(".predict-result");
      if (parseAnswer(text, li.dataset.unit) === null) {
        result.textContent = li.dataset.unit === "count" ? "Give a whole number." : "Give a size with its unit, such as 0, 16M, 512M or 1.5G.";
        return;
      }
      state.predicted[li.dataset.index] = text;
      persist();
      render();
    });
  }
}

async function poll() {
  try {
    const r = await fetch(root.dataset.goals, { credentials: "same-origin" });
    const data = await r.json();
    let changed = false;
    for (const g of data.goals) {
      const li = goalItems[g.index];
      if (!li) continue;
      if (g.reached && !reached.has(g.index)) {
        reached.add(g.index);
        // the value the machine shows the moment the goal is reached
        if (typeof g.measured === "number") state.measured[g.index] = g.measured;
        changed = true;
      }
      // what the machine shows now against what the goal needs (the hints say how to get there)
      const why = Array.isArray(g.why) ? g.why.slice(0, 8).join("; ") : "";
      if (!reached.has(g.index)) li.querySelector(".why").textContent = why ? `Not yet: ${why}.` : "";
    }
    if (changed) persist();
    render();
  } catch (err) { /* the server restarts: keep polling */ }
  setTimeout(poll, 1000);
}

guardReplacing();
persist();
render();
poll();
