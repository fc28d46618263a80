/* A lesson page: polls the goals of the session's machine once a second and marks them
 * done (a reached goal stays done). */

const root = document.getElementById("lesson");
const reached = new Set();
async function poll() {
  try {
    const r = await fetch(root.dataset.goals, { credentials: "same-origin" });
    const data = await r.json();
    data.goals.forEach((g) => {
      const li = document.querySelector(`#goals li[data-index="${g.index}"]`);
      if (g.reached) reached.add(g.index);
      const done = reached.has(g.index);
      li.classList.toggle("done", done);
      li.querySelector(".mark").textContent = done ? "✓" : "○";
      li.querySelector(".why").textContent = done ? "" : (g.why || []).join("; ");
    });
    document.getElementById("score").textContent = `${reached.size}/${data.goals.length}`;
    root.dataset.reached = String(reached.size);
  } catch (err) { /* the server restarts: keep polling */ }
  setTimeout(poll, 1000);
}
poll();
