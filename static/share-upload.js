/* The share page (templates/share.html): upload a file or title this session's recording,
 * get a link. The server checks everything (webapp/sharing.py); this page only shows its
 * answer, as text. */

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
/* a link the server made: /s/ID with an id of 8 URL-safe characters, nothing else */
export const SHARE_URL = /^\/s\/[A-Za-z0-9_-]{8}$/;

function showAnswer(out, status, json) {
  out.replaceChildren();
  if (json && json.ok && typeof json.url === "string" && SHARE_URL.test(json.url)) {
    const link = document.createElement("a");
    link.href = json.url;
    link.className = "share-link";
    link.textContent = new URL(json.url, location.href).href;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.textContent = "copy";
    copy.addEventListener("click", () => navigator.clipboard?.writeText(link.href));
    out.append(document.createTextNode(`Shared (${json.kind}): `), link, " ", copy);
    return;
  }
  const err = document.createElement("span");
  err.className = "error";
  err.textContent = (json && typeof json.error === "string") ? json.error : `the server answered ${status}`;
  out.append(err);
}

async function send(body, headers) {
  const r = await fetch("/share", { method: "POST", credentials: "same-origin", body,
    headers: Object.assign({ "X-CSRFToken": CSRF }, headers) });
  let json = null;
  try { json = await r.json(); } catch (err) { json = null; }
  return [r.status, json];
}

const fileForm = document.getElementById("share-file");
fileForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = document.getElementById("share-file-out");
  const file = document.getElementById("share-file-input").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file, file.name);
  out.textContent = "checking…";
  showAnswer(out, ...(await send(body, {})));
});

document.getElementById("share-session").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = document.getElementById("share-session-out");
  const body = JSON.stringify({
    session_recording: true,
    title: document.getElementById("share-title").value,
    note: document.getElementById("share-note").value,
  });
  out.textContent = "sharing…";
  showAnswer(out, ...(await send(body, { "Content-Type": "application/json" })));
});
