/* Forms that replace this browser's machine (start a lesson, start over, start a shared
 * scenario) say so before they do: the first press shows the warning, the second goes on. */

export function guardReplacing(root = document) {
  for (const form of root.querySelectorAll("form.replaces-machine")) {
    form.addEventListener("submit", (e) => {
      const warning = form.querySelector(".replace-warning");
      if (!warning || !warning.hidden) return; // warned already: go on
      e.preventDefault();
      warning.hidden = false;
      const button = form.querySelector("button[type=submit]");
      if (button) { button.dataset.label = button.textContent; button.textContent = "yes, replace my machine"; }
    });
  }
}
