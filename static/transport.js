/* The live page's way to the server: one Socket.IO connection and CSRF-carrying fetches.
 *
 * `io` is the vendor script's global (static/vendor/socket.io.min.js, loaded before the
 * modules). Tests and benchmarks call `send` by importing this module in the page
 * (`await import("/static/transport.js")`): the same instance, nothing on `window`.
 */

import { showError } from "./messages.js";

export const socket = io({ transports: ["websocket"] });

// every POST carries the session's CSRF token (SECURITY.md)
const CSRF = document.querySelector('meta[name="csrf-token"]').content;

/** Emit `event` and wait for its answer; a refusal or no answer shows as the page's error.
 * Resolves to the answer (null without one); `onOk(answer)` runs only on success. */
export function send(event, data, onOk) {
  return new Promise((resolve) => {
    socket.timeout(60000).emit(event, data, (err, res) => {
      if (err) { showError("no answer from the server (" + event + ")"); resolve(null); return; }
      if (!res || !res.ok) { showError((res && res.error) || "request failed"); resolve(res); return; }
      if (onOk) onOk(res);
      resolve(res);
    });
  });
}

/** POST with the CSRF token; the JSON answer, or null when the body is no JSON. */
export async function post(url, init) {
  const r = await fetch(url, Object.assign({ method: "POST", credentials: "same-origin" }, init,
    { headers: Object.assign({ "X-CSRFToken": CSRF }, init.headers) }));
  let j = null;
  try { j = await r.json(); } catch (err) { j = null; }
  return { response: r, json: j };
}
