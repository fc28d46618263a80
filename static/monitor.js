/* The (qemu) monitor inside the page: a line of HMP, its output appended. */

import { $ } from "./dom.js";
import { send } from "./transport.js";

export function initMonitor() {
  $("hmp-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const line = $("hmp-in").value; $("hmp-in").value = "";
    const out = $("hmp-out");
    out.textContent += "(qemu) " + line + "\n";
    send("hmp", { line }, (r) => { out.textContent += r.output + (r.output.endsWith("\n") || !r.output ? "" : "\n"); out.scrollTop = out.scrollHeight; });
  });
}
