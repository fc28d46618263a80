/* The lesson list: this browser's progress beside each lesson, and a warning before a lesson
 * replaces the machine. */

import * as progress from "./progress.js";
import { guardReplacing } from "./replace-warning.js";

for (const li of document.querySelectorAll("#lessons li[data-key]")) {
  const entry = progress.load(li.dataset.key);
  const total = Number(li.dataset.total);
  const best = Math.min(entry.best, total);
  const now = Math.min(entry.reached.length, total);
  const out = li.querySelector(".progress");
  if (best >= total && total > 0) { out.textContent = `✓ done (${total}/${total})`; li.dataset.progress = "done"; }
  else if (best > 0 || now > 0) { out.textContent = `${Math.max(best, now)}/${total} goals`; li.dataset.progress = "started"; }
}
guardReplacing();
