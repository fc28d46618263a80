/* The live page's messages: an error banner (dismissed after 12 s) and a notice line. */

import { $ } from "./dom.js";

let errorTimer = 0;

export function showError(msg) {
  $("error-text").textContent = msg; $("error").hidden = false;
  clearTimeout(errorTimer); errorTimer = setTimeout(() => ($("error").hidden = true), 12000);
}

export function notice(msg) { $("notice").textContent = msg; }

export function initMessages() {
  $("error-close").addEventListener("click", () => ($("error").hidden = true));
}
