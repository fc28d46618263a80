/* The (qemu) monitor inside the page: a line of HMP, its output appended; ↑/↓ walk the lines
 * typed before (like QEMU's readline), Tab completes a command name (and an info
 * subcommand). The names come from the monitor's own `help` / `help info`, asked once. */

import { $ } from "./dom.js";
import { send } from "./transport.js";

const MAX_HISTORY = 100;

/** Command names from HMP help text: "cont|c  -- ..." gives cont and c. */
export function namesFromHelp(text, prefix = "") {
  const names = new Set();
  for (const line of String(text).split("\n").slice(0, 500)) {
    const rest = prefix ? (line.startsWith(prefix) ? line.slice(prefix.length) : "") : line;
    const first = rest.split(" ", 1)[0];
    for (const name of first.split("|")) if (/^[a-z_][a-z0-9_-]{0,40}$/i.test(name)) names.add(name);
  }
  return [...names].sort();
}

function commonPrefix(words) {
  let p = words[0] || "";
  for (const w of words) while (!w.startsWith(p)) p = p.slice(0, -1);
  return p;
}

/** Line history: push, then older()/newer() from the line being edited. */
export class History {
  constructor(max = MAX_HISTORY) { this.lines = []; this.max = max; this.pos = 0; this.draft = ""; }
  push(line) {
    if (line && this.lines[this.lines.length - 1] !== line) this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
    this.pos = this.lines.length; this.draft = "";
  }
  older(current) {
    if (this.pos === this.lines.length) this.draft = current;
    if (this.pos > 0) this.pos--;
    return this.lines[this.pos] ?? current;
  }
  newer() {
    if (this.pos < this.lines.length) this.pos++;
    return this.pos === this.lines.length ? this.draft : this.lines[this.pos];
  }
}

export function initMonitor() {
  const input = $("hmp-in"), out = $("hmp-out");
  const history = new History();
  const names = { commands: null, info: null };
  const print = (text) => { out.textContent += text; out.scrollTop = out.scrollHeight; };
  const ask = (line) => new Promise((resolve) => send("hmp", { line }, (r) => resolve(r && typeof r.output === "string" ? r.output : "")));

  $("hmp-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const line = input.value; input.value = "";
    history.push(line.trim() ? line : "");
    print("(qemu) " + line + "\n");
    send("hmp", { line }, (r) => print(r.output + (r.output.endsWith("\n") || !r.output ? "" : "\n")));
  });

  async function complete() {
    const line = input.value;
    const info = /^info\s+(\S*)$/.exec(line);
    if (!info && /\s/.test(line)) return; // only the first word, or info's subcommand
    const key = info ? "info" : "commands";
    if (!names[key]) names[key] = namesFromHelp(await ask(info ? "help info" : "help"), info ? "info " : "");
    const word = info ? info[1] : line;
    const found = names[key].filter((n) => n.startsWith(word));
    if (found.length === 0) return;
    const head = info ? "info " : "";
    if (found.length === 1) { input.value = head + found[0] + " "; return; }
    const common = commonPrefix(found);
    if (common.length > word.length) { input.value = head + common; return; }
    print(found.join("  ") + "\n");
  }

  input.addEventListener("keydown", (e) => {
    if (e.key === "ArrowUp") { e.preventDefault(); input.value = history.older(input.value); }
    else if (e.key === "ArrowDown") { e.preventDefault(); input.value = history.newer(); }
    else if (e.key === "Tab" && input.value.trim()) { e.preventDefault(); complete(); }
  });
}
