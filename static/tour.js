/* The first-visit tour of the live page: what virtio-mem is, what a cell is, what requested /
 * plugged / usable mean, what to try first, where to read more. It opens by itself once per
 * browser (localStorage), never inside a lesson's frame, and the header's "tour" button
 * opens it again. Built from nodes and text only; the swatches come from the one
 * block-state table (block-states.js), so they look like the grid's cells. */

import { CODE, state } from "./block-states.js";

export const SEEN = "vmemlab.tour";

const SPEC = "https://docs.oasis-open.org/virtio/virtio/v1.2/cs01/virtio-v1.2-cs01.html";
const RFC = "http://mail.spinics.net/lists/kvm/msg151523.html";
const GUIDE = "https://virtio-mem.gitlab.io/user-guide/user-guide-qemu.html";

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function swatch(key) {
  const s = state(CODE[key]).style;
  const sw = h("span", { class: "swatch-inline", "aria-hidden": "true" });
  sw.style.background = s.half ? `linear-gradient(${s.fill} 50%, ${s.half} 50%)` : s.fill;
  if (s.hatch) sw.style.backgroundImage = `linear-gradient(135deg, transparent 45%, ${s.hatch} 45%, ${s.hatch} 55%, transparent 55%)`;
  return sw;
}

function link(href, text) {
  return h("a", { href, target: "_blank", rel: "noopener" }, text);
}

/* The cards, in order: [title, ...content nodes]. Plain words; true of QEMU 7.2 + Linux 6.1. */
function cards() {
  return [
    ["What is virtio-mem?",
      h("p", {}, "virtio-mem lets a host give a running virtual machine more memory, or take some back. " +
        "The host only asks: it sets a requested size. The guest's driver does the work: it plugs or " +
        "unplugs memory in small blocks and sends the device one request for each run of blocks."),
      h("p", {}, "This page runs a tiny guest kernel whose driver behaves like Linux 6.1's, against an " +
        "emulated device that follows QEMU 7.2. Everything here really happens in that machine.")],
    ["What is a cell?",
      h("p", {}, "Each grid is one virtio-mem device, and each cell is one of its device blocks " +
        "(2 MiB by default; the device card says). Hover a cell for its address and state."),
      h("p", {}, swatch("UNPLUGGED"), "unplugged: the guest may not use it · ",
        swatch("PLUGGED_FREE"), "plugged, free · ", swatch("PLUGGED_MOVABLE"), "plugged, holding data " +
        "Linux can move elsewhere · ", swatch("PLUGGED_UNMOVABLE"), "plugged, holding data it cannot move " +
        "(such a block cannot be unplugged) · ", swatch("OUTSIDE_USABLE"), "outside the usable region."),
      h("p", {}, "The legend under the grids lists every state; the host view shows what the host " +
        "really backs with memory.")],
    ["Requested, plugged, usable",
      h("dl", {},
        h("dt", {}, "requested"), h("dd", {}, "What the host asks the guest to have plugged (QEMU's " +
          "requested-size). Changing it is all the host does."),
        h("dt", {}, "plugged"), h("dd", {}, "What the guest has really plugged, block by block. It " +
          "follows requested when the guest can: it stays above it when blocks hold data that cannot " +
          "be moved, and at 0 when the guest has no driver."),
        h("dt", {}, "usable"), h("dd", {}, "The part of the device's region the guest may plug into " +
          "now (usable_region_size). QEMU keeps it larger than requested (by 256 MiB on x86, 1 GiB " +
          "on ARM, at most the whole region); cells past it are hatched."))],
    ["What to try first",
      h("ol", {},
        h("li", {}, "Move a device's requested-size slider up, or type ", h("code", {}, "qom-set vm0 requested-size 512M"),
          " in the monitor, and watch cells turn blue."),
        h("li", {}, "Allocate memory in the guest (guest actions), then ask for less: blocks with data " +
          "the guest cannot move stay plugged."),
        h("li", {}, "Reboot: every cell turns grey at once, then the guest plugs what is requested.")),
      h("p", {}, "Or follow a lesson, with hints and explanations: ", h("a", { href: "/lessons" }, "lessons"), ".")],
    ["Read more",
      h("ul", {},
        h("li", {}, link(SPEC, "The virtio 1.2 specification"), ", section 5.15 \u201cMemory Device\u201d: " +
          "the device, its config space and requests."),
        h("li", {}, link(RFC, "The 2017 RFC, \u201cvirtio-mem: paravirtualized memory\u201d"), " (David " +
          "Hildenbrand, on the kvm list): where the idea began. Some of its ideas were not shipped; the " +
          "page labels them."),
        h("li", {}, link(GUIDE, "virtio-mem's QEMU user guide"), "."),
        h("li", {}, h("a", { href: "/about/model" }, "What vmemlab leaves out"), " (this server)."))],
  ];
}

/* the live page's template links style.css only; the tour brings its own looks */
function linkStyles() {
  const href = new URL("./teach.css", import.meta.url).href;
  if (![...document.styleSheets].some((s) => s.href === href)) {
    document.head.appendChild(h("link", { rel: "stylesheet", href }));
  }
}

export function initTour({ button = document.getElementById("tour-open"), auto = true } = {}) {
  linkStyles();
  const pages = cards();
  let index = 0;
  const title = h("h2", { id: "tour-title" });
  const body = h("div", { class: "tour-body" });
  const count = h("span", { class: "tour-count" });
  const back = h("button", { type: "button", class: "tour-back" }, "back");
  const next = h("button", { type: "button", class: "tour-next" }, "next");
  const close = h("button", { type: "button", class: "tour-close" }, "close");
  const box = h("div", { class: "tour", role: "dialog", "aria-modal": "true", "aria-labelledby": "tour-title" },
    title, body, h("div", { class: "tour-nav" }, count, back, next, close));
  const backdrop = h("div", { class: "tour-backdrop", id: "tour" }, box);
  backdrop.hidden = true;
  document.body.appendChild(backdrop);

  function render() {
    const [heading, ...content] = pages[index];
    title.textContent = heading;
    body.replaceChildren(...content);
    count.textContent = `${index + 1} / ${pages.length}`;
    back.disabled = index === 0;
    next.textContent = index === pages.length - 1 ? "done" : "next";
    backdrop.dataset.card = String(index);
  }
  function open() { index = 0; render(); backdrop.hidden = false; next.focus(); }
  function dismiss() {
    backdrop.hidden = true;
    try { localStorage.setItem(SEEN, "seen"); } catch (err) { /* storage off: it shows again */ }
    if (button) button.focus();
  }
  back.addEventListener("click", () => { if (index > 0) { index--; render(); } });
  next.addEventListener("click", () => { if (index < pages.length - 1) { index++; render(); } else dismiss(); });
  close.addEventListener("click", dismiss);
  backdrop.addEventListener("click", (e) => { if (e.target === backdrop) dismiss(); });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !backdrop.hidden) dismiss(); });
  if (button) button.addEventListener("click", open);

  let seen = false;
  try { seen = localStorage.getItem(SEEN) === "seen"; } catch (err) { seen = true; }
  const framed = window.top !== window; // inside a lesson: the lesson explains
  if (auto && !seen && !framed) open();
  return { open, dismiss };
}

initTour();
