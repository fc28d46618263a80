/* The legend under a view switch: one swatch per state the view can show, then the flashes.
 * Swatches mimic the grid's tiles (colour and pattern) from the same block-state table. */

import { VIEWS, state } from "./block-states.js";
import { FLASH } from "./grid.js";

function item(ul, swatch, label) {
  const li = document.createElement("li");
  li.append(swatch, document.createTextNode(label));
  ul.appendChild(li);
}

/** Fill `ul` with the legend of `view` ("guest", "host", "device") and of `flashes`. */
export function renderLegend(ul, view, flashes = ["zero", "violation"]) {
  ul.textContent = "";
  for (const code of VIEWS[view]) {
    const { style: s, label } = state(code);
    const sw = document.createElement("span"); sw.className = "swatch";
    sw.style.background = s.fill;
    if (s.outline) sw.style.outline = "2px solid " + s.outline;
    for (const mark of ["hatch", "dot", "ring", "cross"]) {
      if (s[mark]) { sw.classList.add(mark); sw.style.setProperty("--mark", s[mark]); }
    }
    if (s.half) sw.style.background = `linear-gradient(${s.fill} 50%, ${s.half} 50%)`;
    item(ul, sw, label);
  }
  for (const k of flashes) {
    const sw = document.createElement("span"); sw.className = "swatch flash-" + k;
    sw.style.background = FLASH[k].color;
    item(ul, sw, "flash: " + FLASH[k].label);
  }
}
