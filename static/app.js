/* vmemlab page: Socket.IO events → model → grids, register map, logs, charts.
 *
 * Server events: keyframe (everything), batch (engine events of one tick), view (snapshot:
 * block codes, config space, chart sample). State changes from events apply only if newer
 * than the last snapshot (seq), so a snapshot and the events around it never disagree.
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MiB = 1024 * 1024;
  const GUEST = { UNPLUGGED: 0, FREE: 1, IN_FLIGHT: 4, OUTSIDE: 5 };
  const HOST = { EMPTY: 6 };
  const CONFIG_FIELDS = ["block_size", "node_id", "addr", "region_size", "usable_region_size",
    "plugged_size", "requested_size"];

  const state = {
    generation: -1, viewSeq: 0, logSeq: 0, mode: "guest",
    devices: new Map(), // id -> {info, config, grid, els, pendingReq}
    order: [], series: [], allocations: [], chartsReady: false, runstate: "",
  };
  window.vmem = state;

  // the page's data (block state names) comes in a JSON element: no inline script (CSP)
  window.VMEM_STATES = JSON.parse($("vmem-states").textContent);
  // every POST carries the session's CSRF token (SECURITY.md)
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;

  /* A DOM element from data: attributes and properties set one by one, text as text nodes.
   * Nothing a server or a file sends ever goes through an HTML parser. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "class") node.className = v;
      else if (k in node) node[k] = v; // a property: never parsed as markup
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  const hex = (v) => "0x" + Number(v).toString(16);
  const mib = (v) => {
    const m = v / MiB;
    return (m >= 1024 && m % 1024 === 0) ? (m / 1024) + " GiB" : (Math.round(m * 10) / 10) + " MiB";
  };
  function b64(s) {
    const bin = atob(s); const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // ------------------------------------------------------------------ messages
  let errorTimer = 0;
  function showError(msg) {
    $("error-text").textContent = msg; $("error").hidden = false;
    clearTimeout(errorTimer); errorTimer = setTimeout(() => ($("error").hidden = true), 12000);
  }
  function notice(msg) { $("notice").textContent = msg; }
  $("error-close").addEventListener("click", () => ($("error").hidden = true));

  const socket = io({ transports: ["websocket"] });
  window.vmemSocket = socket;
  function send(event, data, onOk) {
    return new Promise((resolve) => {
      socket.timeout(60000).emit(event, data, (err, res) => {
        if (err) { showError("no answer from the server (" + event + ")"); resolve(null); return; }
        if (!res || !res.ok) { showError((res && res.error) || "request failed"); resolve(res); return; }
        if (onOk) onOk(res);
        resolve(res);
      });
    });
  }
  window.vmemSend = send;

  // ------------------------------------------------------------------ legend
  function renderLegend() {
    const ul = $("legend"); ul.textContent = "";
    const add = (canvasTile, label) => {
      const li = document.createElement("li"); li.appendChild(canvasTile);
      li.appendChild(document.createTextNode(label)); ul.appendChild(li);
    };
    for (const code of BlockGrid.VIEW_CODES[state.mode]) {
      const sw = document.createElement("span"); sw.className = "swatch";
      const s = BlockGrid.STYLE[code]; sw.style.background = s.fill;
      if (s.outline) sw.style.outline = "2px solid " + s.outline;
      if (s.hatch) sw.classList.add("hatch");
      if (s.dot) sw.classList.add("dot");
      if (s.ring) sw.classList.add("ring");
      if (s.half) sw.style.background = `linear-gradient(${s.fill} 50%, ${s.half} 50%)`;
      if (s.cross) sw.classList.add("cross");
      add(sw, s.label);
    }
    for (const k of ["zero", "violation"]) {
      const sw = document.createElement("span"); sw.className = "swatch flash-" + k;
      sw.style.background = BlockGrid.FLASH[k].color; add(sw, "flash: " + BlockGrid.FLASH[k].label);
    }
  }

  // ------------------------------------------------------------------ device cards
  function buildDevices(view) {
    const box = $("device-cards"); box.textContent = "";
    BlockGrid.all.clear(); state.devices.clear(); state.order = [];
    const cfgSel = $("cfg-device"), rogueSel = $("rogue-device"), target = $("alloc-target");
    cfgSel.textContent = ""; rogueSel.textContent = "";
    target.querySelectorAll("option.dev").forEach((o) => o.remove());
    for (const d of view.devices) {
      const card = document.createElement("article");
      card.className = "device"; card.dataset.device = d.id;
      const bs = d.block_size / MiB, max = d.config.region_size / MiB;
      const reqLabel = `requested size of ${d.id} in MiB`;
      const range = { min: "0", max: String(max), step: String(bs), "aria-label": reqLabel };
      const canvas = el("canvas", { class: "grid", dataset: { device: d.id }, tabIndex: 0,
        "aria-label": `blocks of ${d.id}: ${d.nb_blocks} blocks of ${mib(d.block_size)}` });
      card.append(
        el("header", {},
          el("h2", {}, `node ${d.node} · ${d.id}`),
          el("label", { class: "req" }, "requested ",
            el("input", Object.assign({ type: "range", class: "req-slider" }, range)), " ",
            el("input", Object.assign({ type: "number", class: "req-number" }, range)), " MiB ",
            el("button", { type: "button", class: "req-set" }, "set")),
          " ", el("span", { class: "stat" }, "plugged ", el("b", { class: "plugged" })),
          " ", el("span", { class: "stat" }, "usable ", el("b", { class: "usable" })),
          " ", el("span", { class: "stat" }, "driver ", el("b", { class: "driver" })),
          " ", el("span", { class: "stat inflight", hidden: true }, "· in flight ·")),
        el("div", { class: "grid-wrap" }, canvas));
      box.appendChild(card);
      const grid = new BlockGrid(canvas, d.nb_blocks);
      grid.setMode(state.mode);
      BlockGrid.all.add(grid);
      const els = {
        card, slider: card.querySelector(".req-slider"), number: card.querySelector(".req-number"),
        plugged: card.querySelector(".plugged"), usable: card.querySelector(".usable"),
        driver: card.querySelector(".driver"), inflight: card.querySelector(".inflight"),
      };
      const dev = { info: d, config: Object.assign({}, d.config), grid, els, pendingReq: null, editing: false };
      state.devices.set(d.id, dev); state.order.push(d.id);
      const setReq = (valueMiB) => send("set_requested_size", { device: d.id, size: Math.round(valueMiB * MiB) },
        () => notice(`${d.id}: requested-size ${valueMiB} MiB`));
      els.slider.addEventListener("input", () => { dev.editing = true; els.number.value = els.slider.value; });
      els.slider.addEventListener("change", () => { dev.editing = false; setReq(+els.slider.value); });
      els.number.addEventListener("focus", () => (dev.editing = true));
      els.number.addEventListener("blur", () => (dev.editing = false));
      els.number.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); setReq(+els.number.value); } });
      card.querySelector(".req-set").addEventListener("click", () => setReq(+els.number.value));
      canvas.addEventListener("mousemove", (e) => hover(dev, e));
      canvas.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
      for (const sel of [cfgSel, rogueSel]) {
        const o = document.createElement("option"); o.value = d.id; o.textContent = d.id; sel.appendChild(o);
      }
      const o = document.createElement("option"); o.value = d.id; o.className = "dev";
      o.textContent = d.id + " (node " + d.node + ")"; target.appendChild(o);
    }
  }

  function updateDeviceText(dev) {
    const c = dev.config, els = dev.els;
    els.plugged.textContent = mib(c.plugged_size);
    els.usable.textContent = mib(c.usable_region_size);
    els.driver.textContent = dev.info.driver_state + (dev.info.broken ? " (broken)" : "");
    els.inflight.hidden = c.plugged_size === c.requested_size;
    if (!dev.editing && document.activeElement !== els.slider && document.activeElement !== els.number) {
      els.slider.value = c.requested_size / MiB; els.number.value = c.requested_size / MiB;
    }
    const card = els.card.dataset;
    card.plugged = c.plugged_size; card.requested = c.requested_size; card.usable = c.usable_region_size;
  }

  // ------------------------------------------------------------------ register map
  const changedAt = new Map();
  function renderConfig() {
    const id = $("cfg-device").value || state.order[0];
    const dev = state.devices.get(id); if (!dev) return;
    const tbody = $("config-table").tBodies[0]; tbody.textContent = "";
    const now = performance.now();
    for (const f of CONFIG_FIELDS) {
      const tr = document.createElement("tr"); tr.dataset.field = f;
      const t = changedAt.get(id + "." + f);
      if (t && now - t < 2500) tr.className = "changed";
      const v = dev.config[f];
      tr.append(el("th", {}, f), el("td", { class: "mono" }, f === "node_id" ? v : hex(v)),
        el("td", {}, f === "node_id" || f === "addr" ? "" : mib(v)));
      tbody.appendChild(tr);
    }
  }
  function setConfig(dev, fields, mark) {
    for (const [k, v] of Object.entries(fields)) {
      if (mark && dev.config[k] !== v) changedAt.set(dev.info.id + "." + k, performance.now());
      dev.config[k] = v;
    }
    updateDeviceText(dev);
  }
  $("cfg-device").addEventListener("change", renderConfig);
  setInterval(renderConfig, 500);

  // ------------------------------------------------------------------ logs
  const MAX_LOG = 200;
  function logLine(text, cls) {
    const ol = $("vq-log"); const li = document.createElement("li");
    li.textContent = text; if (cls) li.className = cls; ol.appendChild(li);
    while (ol.childElementCount > MAX_LOG) ol.firstElementChild.remove();
    ol.scrollTop = ol.scrollHeight;
  }
  function consoleLines(lines) {
    const pre = $("console");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const text = pre.textContent + lines.map((l) => l + "\n").join("");
    pre.textContent = text.length > 60000 ? text.slice(-40000) : text;
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  function describe(ev, dev) {
    switch (ev.kind) {
      case "request": {
        if (dev) dev.pendingReq = ev;
        return null;
      }
      case "response": {
        const r = dev && dev.pendingReq; if (dev) dev.pendingReq = null;
        const head = r ? (r.type === "UNPLUG_ALL" ? "UNPLUG_ALL" : `${r.type.padEnd(6)} ${hex(r.addr)} ×${r.nb_blocks}`) : ev.request;
        return [`${ev.device}: ${head} → ${ev.response}${ev.state ? " (" + ev.state + ")" : ""}`, "vq " + ev.response.toLowerCase()];
      }
      case "config_change":
        if (!ev.notified && Object.keys(ev.fields).every((k) => k === "plugged_size")) return null;
        return [`${ev.device}: config ${Object.entries(ev.fields).map(([k, v]) => k + "=" + hex(v)).join(" ")}${ev.notified ? " (notified)" : ""}`, "cfg"];
      case "violation":
        return [`VIOLATION ${ev.access} ${hex(ev.addr)} pc ${hex(ev.pc)}: ${ev.reason}`, "violation"];
      case "zero_page_read":
        return [`${ev.device}: zero-page read of block ${ev.first_block} ×${ev.count}${ev.outside_usable ? " (outside usable)" : ""}`, "zero"];
      case "reset": return [`RESET (${ev.reason})${ev.cmdline ? " cmdline: " + ev.cmdline : ""}`, "reset"];
      case "device_broken": return [`${ev.device}: BROKEN ${ev.reason}`, "violation"];
      case "runstate": return [`runstate → ${ev.state}${ev.reason ? " (" + ev.reason + ")" : ""}`, "meta"];
      case "migration": return [`migration ${ev.status} ${ev.detail || ""}`, "meta"];
      case "guest_command": return [`guest ${ev.command} → ${ev.status === 0 ? "ok" : ev.status}`, "meta"];
      case "guest_status": return ev.device ? [`${ev.device}: driver ${ev.status}`, "meta"] : [`guest ${ev.status}`, "meta"];
      default: return null;
    }
  }

  // ------------------------------------------------------------------ events
  function blockRange(dev, addr, nb) {
    const bs = dev.info.block_size;
    return [Math.floor((addr - dev.info.addr) / bs), nb];
  }
  function applyEvent(ev, now) {
    const dev = ev.device ? state.devices.get(ev.device) : null;
    const fresh = ev.seq > state.viewSeq;
    if (dev && fresh) {
      const g = dev.grid;
      if (ev.kind === "block_state") {
        const usable = Math.floor(dev.config.usable_region_size / dev.info.block_size);
        if (ev.plugged) {
          g.setRange("guest", ev.first_block, ev.count, GUEST.FREE, ev.wall);
          g.setRange("host", ev.first_block, ev.count, HOST.EMPTY, ev.wall);
        } else {
          const end = ev.first_block + ev.count;
          const inside = Math.max(0, Math.min(end, usable) - ev.first_block);
          g.setRange("guest", ev.first_block, inside, GUEST.UNPLUGGED, ev.wall);
          g.setRange("host", ev.first_block, inside, GUEST.UNPLUGGED, ev.wall);
          if (end > usable) {
            g.setRange("guest", Math.max(usable, ev.first_block), end - Math.max(usable, ev.first_block), GUEST.OUTSIDE, ev.wall);
            g.setRange("host", Math.max(usable, ev.first_block), end - Math.max(usable, ev.first_block), GUEST.OUTSIDE, ev.wall);
          }
        }
        g.flash(ev.first_block, ev.count, "pulse", now);
        g.seq = ev.seq;
        return; // nothing to log: the grid is the log of block states
      } else if (ev.kind === "request" && (ev.type === "PLUG" || ev.type === "UNPLUG") && ev.nb_blocks) {
        const [first, n] = blockRange(dev, ev.addr, ev.nb_blocks);
        if (first >= 0 && n <= dev.info.nb_blocks) {
          dev.inflight = { first, saved: g.codes.guest.slice(first, first + n) };
          g.setRange("guest", first, n, GUEST.IN_FLIGHT, ev.wall);
        }
      } else if (ev.kind === "response" && dev.inflight) {
        // answered: blocks the device did not change (NACK, ERROR, BUSY) get their state back
        const { first, saved } = dev.inflight; dev.inflight = null;
        for (let j = 0; j < saved.length; j++) {
          if (g.codes.guest[first + j] === GUEST.IN_FLIGHT) g.setRange("guest", first + j, 1, saved[j]);
        }
      } else if (ev.kind === "config_change") {
        setConfig(dev, ev.fields, true);
      }
    }
    if (dev && ev.kind === "zero_page_read") dev.grid.flash(ev.first_block, ev.count, "zero");
    if (ev.kind === "violation") {
      const vdev = dev || [...state.devices.values()].find((d) => ev.addr >= d.info.addr && ev.addr < d.info.addr + d.config.region_size);
      if (vdev) { const [first] = blockRange(vdev, ev.addr, 1); vdev.grid.flash(first, 1, "violation"); }
      window.vmemStats.violations = (window.vmemStats.violations || 0) + 1;
      $("devices").dataset.violations = window.vmemStats.violations;
    }
    if (ev.kind === "runstate") setRunstate(ev.state);
    if (ev.seq <= state.logSeq) return;
    if (ev.kind === "console") { consoleLines([ev.line]); return; }
    const line = describe(ev, dev);
    if (line) logLine(line[0], line[1]);
  }

  function setRunstate(rs) {
    state.runstate = rs; const b = $("runstate"); b.textContent = rs; b.dataset.state = rs;
  }

  function applyView(v, full) {
    state.viewSeq = v.seq;
    setRunstate(v.runstate);
    for (const d of v.devices) {
      const dev = state.devices.get(d.id); if (!dev) continue;
      dev.info = Object.assign(dev.info, { driver_state: d.driver_state, broken: d.broken });
      if (d.guest) dev.grid.setCodes("guest", b64(d.guest));
      if (d.host) dev.grid.setCodes("host", b64(d.host));
      dev.grid.seq = v.seq;
      setConfig(dev, d.config, !full);
    }
    const nodes = v.nodes.map((n) => `node ${n.node_id}: ${mib(n.boot_ram)} boot + ${mib(n.plugged)} plugged`).join(" · ");
    $("nodes-text").textContent = nodes + ` · host resident ${mib(v.resident)} · server RSS ${mib(v.host_rss)}`;
    const summary = `${v.nodes.length} node${v.nodes.length > 1 ? "s" : ""} · boot ${mib(v.boot_ram_size)} · ` +
      v.devices.map((d) => `${d.id} ${mib(d.config.plugged_size)}/${mib(d.config.requested_size)}`).join(" · ") +
      (v.cmdline ? ` · cmdline "${v.cmdline}"` : "");
    $("summary").textContent = summary;
    $("devices").dataset.seq = v.seq;
    updateAllocations(v.allocations || []);
    updateNuma(v);
    if (v.sample) addSample(v.sample);
  }

  function updateAllocations(list) {
    const key = JSON.stringify(list);
    if (key === state.allocKey) return; state.allocKey = key;
    const sel = $("alloc-list"); const keep = sel.value; sel.textContent = "";
    const all = document.createElement("option"); all.value = "0"; all.textContent = "all allocations"; sel.appendChild(all);
    for (const a of list) {
      const o = document.createElement("option"); o.value = a.id;
      o.textContent = `#${a.id} ${mib(a.pages * 4096)} ${a.unmovable ? "unmovable" : "movable"}`; sel.appendChild(o);
    }
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "0";
  }

  socket.on("keyframe", (k) => {
    const v = k.view;
    state.generation = k.generation; state.logSeq = k.log_seq;
    $("vq-log").textContent = ""; $("console").textContent = "";
    buildDevices(v);
    renderLegend();
    for (const ev of k.log) { const dev = ev.device ? state.devices.get(ev.device) : null; const l = describe(ev, dev); if (l) logLine(l[0], l[1]); }
    consoleLines(k.console);
    $("rfc").checked = !!k.rfc_shrink_on_reboot;
    $("btn-step").disabled = !k.capabilities.step;
    $("btn-step").title = k.capabilities.step ? "Single-step the guest" : "single-step needs engine support (Machine.step)";
    $("speed").disabled = !k.capabilities.speed;
    $("speed").title = k.capabilities.speed ? "Guest speed" : "speed control needs engine support (Machine.set_speed)";
    state.series = k.series.slice();
    applyView(v, true);
    initCharts();
    document.body.dataset.ready = "1";
    document.body.dataset.generation = k.generation;
    renderConfig();
  });
  function onBatch(b) {
    if (b.generation !== state.generation) return;
    const now = performance.now();
    for (const ev of b.events) applyEvent(ev, now);
    if (b.events.length) state.logSeq = Math.max(state.logSeq, b.events[b.events.length - 1].seq);
  }
  window.vmemOnBatch = onBatch; // the render benchmark feeds synthetic batches through here
  socket.on("batch", onBatch);
  socket.on("view", (v) => { if (v.generation === state.generation) applyView(v, false); });
  socket.on("server_error", (e) => showError(e.error));
  // the machine stopped under the page (the server closed it): say so, offer a new one
  socket.on("machine_closed", (e) => { showError(e.error); setRunstate("closed"); });
  socket.on("connect", () => notice("connected"));
  socket.on("disconnect", () => { notice("disconnected — reconnecting…"); setRunstate("offline"); });

  // ------------------------------------------------------------------ charts
  const chartLayout = (title, ytitle) => ({
    title: { text: title, font: { size: 16 } }, margin: { l: 60, r: 10, t: 36, b: 64 },
    xaxis: { title: { text: "" }, ticksuffix: " s" }, yaxis: { title: { text: ytitle }, rangemode: "tozero" },
    legend: { orientation: "h", x: 0, y: -0.12, yanchor: "top" },
    font: { size: 13 }, uirevision: "keep",
  });
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
  let plotlyRequested = false;
  function initCharts() {
    if (!window.Plotly) {
      // charts come second: load Plotly (4.8 MB, local) only once the grids are drawn
      if (!plotlyRequested) {
        plotlyRequested = true;
        const tag = document.createElement("script");
        tag.src = document.body.dataset.plotlySrc; tag.async = true;
        tag.onload = () => initCharts();
        tag.onerror = () => showError("could not load the chart library (static/vendor/plotly.min.js)");
        document.head.appendChild(tag);
      }
      return;
    }
    const s = state.series;
    const sizes = [];
    state.order.forEach((id, i) => {
      sizes.push({ name: id + " requested", x: s.map((p) => p.t), y: s.map((p) => (p.devices[id] || [0, 0])[0] / MiB), mode: "lines", line: { dash: "dash", color: PALETTE[i % 8], shape: "hv" } });
      sizes.push({ name: id + " plugged", x: s.map((p) => p.t), y: s.map((p) => (p.devices[id] || [0, 0])[1] / MiB), mode: "lines", line: { color: PALETTE[i % 8], shape: "hv" } });
    });
    Plotly.react("chart-sizes", sizes, chartLayout("requested vs plugged", "MiB"), { displayModeBar: false, responsive: true });
    Plotly.react("chart-host", [
      { name: "this machine: host-resident", x: s.map((p) => p.t), y: s.map((p) => p.resident / MiB), mode: "lines", line: { color: "#0072B2" } },
      { name: "server process RSS", x: s.map((p) => p.t), y: s.map((p) => p.rss / MiB), mode: "lines", line: { color: "#999", dash: "dot" } },
    ], chartLayout("host memory (resident pages / RSS)", "MiB"), { displayModeBar: false, responsive: true });
    state.chartsReady = true;
    if (state.lastNuma) updateNuma(state.lastNuma, true);
  }
  function addSample(p) {
    state.series.push(p);
    if (!state.chartsReady) return;
    const xs = [], ys = [], idx = [];
    state.order.forEach((id, i) => {
      const v = p.devices[id] || [0, 0];
      xs.push([p.t], [p.t]); ys.push([v[0] / MiB], [v[1] / MiB]); idx.push(2 * i, 2 * i + 1);
    });
    Plotly.extendTraces("chart-sizes", { x: xs, y: ys }, idx, 900);
    Plotly.extendTraces("chart-host", { x: [[p.t], [p.t]], y: [[p.resident / MiB], [p.rss / MiB]] }, [0, 1], 900);
  }
  function updateNuma(v, force) {
    state.lastNuma = v;
    if (!state.chartsReady) return;
    const key = JSON.stringify(v.nodes);
    if (!force && key === state.numaKey) return; state.numaKey = key;
    const x = v.nodes.map((n) => "node " + n.node_id);
    Plotly.react("chart-numa", [
      { type: "bar", name: "boot RAM", x, y: v.nodes.map((n) => n.boot_ram / MiB), marker: { color: "#999999" } },
      { type: "bar", name: "virtio-mem plugged", x, y: v.nodes.map((n) => n.plugged / MiB), marker: { color: "#0072B2" } },
    ], Object.assign(chartLayout("memory per NUMA node (info numa)", "MiB"), { barmode: "stack", xaxis: { ticksuffix: "" } }),
    { displayModeBar: false, responsive: true });
  }

  // ------------------------------------------------------------------ hover
  let hoverSeq = 0;
  function hover(dev, e) {
    const i = dev.grid.cellAt(e.clientX, e.clientY); const tip = $("tooltip");
    if (i < 0) { tip.hidden = true; return; }
    const addr = dev.info.addr + i * dev.info.block_size;
    const code = dev.grid.codes[state.mode][i];
    tip.hidden = false;
    tip.style.left = Math.min(window.innerWidth - 280, e.clientX + 14) + "px";
    tip.style.top = (e.clientY + 14) + "px";
    tip.textContent = `${dev.info.id} block ${i} @ ${hex(addr)}\n${BlockGrid.STYLE[code].label}`;
    const my = ++hoverSeq;
    clearTimeout(dev.hoverTimer);
    dev.hoverTimer = setTimeout(() => socket.emit("block_info", { device: dev.info.id, block: i }, (r) => {
      if (my !== hoverSeq || !r || !r.ok) return;
      tip.textContent = `${r.device} block ${r.block} @ ${hex(r.addr)} (${mib(r.size)})\n` +
        `guest: ${r.guest_state} — movable ${r.movable_pages} / unmovable ${r.unmovable_pages} / free ${r.free_pages} pages` +
        (r.kernel_pages ? ` / kernel ${r.kernel_pages}` : "") + "\n" +
        (r.memory_block ? `${r.memory_block}: ${r.zone === "none" ? "not added" : r.zone === "offline" ? "offline" : "ZONE_" + r.zone.toUpperCase()} (${r.memory_block_state})\n` : r.zone === null ? "" : "outside every memory block\n") +
        `host: ${r.host_state} — ${r.resident === null ? "?" : mib(r.resident)} resident`;
    }), 60);
  }

  // ------------------------------------------------------------------ controls
  document.querySelectorAll('input[name="view"]').forEach((r) => r.addEventListener("change", () => {
    state.mode = r.value; for (const d of state.devices.values()) d.grid.setMode(state.mode); renderLegend();
  }));
  $("btn-pause").addEventListener("click", () => send("run", { action: "pause" }));
  $("btn-resume").addEventListener("click", () => send("run", { action: "resume" }));
  $("btn-step").addEventListener("click", () => send("run", { action: "step", instructions: 1 },
    (r) => notice(`stepped ${r.instructions} instruction(s): pc ${hex(r.pc)}`)));
  $("speed").addEventListener("change", () => send("speed", { factor: +$("speed").value }));
  $("btn-reboot").addEventListener("click", () => send("reboot", { mode: "reset" }, () => notice("system_reset")));
  $("btn-reboot-nodriver").addEventListener("click", () => send("reboot", { mode: "no-driver" }, () => notice("rebooting into a guest without virtio_mem")));
  $("btn-reboot-driver").addEventListener("click", () => send("reboot", { mode: "driver" }, () => notice("rebooting with the driver")));
  $("rfc").addEventListener("change", () => send("rfc_shrink_on_reboot", { enabled: $("rfc").checked },
    () => notice("new machine started with RFC shrink-on-reboot " + ($("rfc").checked ? "on" : "off"))));
  const result = (r) => { if (r && r.message) $("action-result").textContent = r.message; };
  $("alloc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("action-result").textContent = "allocating…";
    send("guest", { action: "alloc", size: +$("alloc-size").value, unmovable: $("alloc-kind").value === "unmovable", target: $("alloc-target").value || null }, result);
  });
  $("btn-free").addEventListener("click", () => send("guest", { action: "free", id: +$("alloc-list").value }, result));
  $("btn-verify").addEventListener("click", () => send("guest", { action: "verify", id: +$("alloc-list").value }, result));
  $("btn-touch").addEventListener("click", () => send("guest", { action: "touch", id: +$("alloc-list").value }, result));
  $("btn-dump").addEventListener("click", () => { $("action-result").textContent = "dumping…"; send("guest", { action: "dump" }, result); });
  $("btn-rogue").addEventListener("click", () => send("guest", { action: "rogue_write", device: $("rogue-device").value }, result));

  $("hmp-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const line = $("hmp-in").value; $("hmp-in").value = "";
    const out = $("hmp-out");
    out.textContent += "(qemu) " + line + "\n";
    send("hmp", { line }, (r) => { out.textContent += r.output + (r.output.endsWith("\n") || !r.output ? "" : "\n"); out.scrollTop = out.scrollHeight; });
  });

  $("load-file").addEventListener("change", async () => {
    const f = $("load-file").files[0]; if (!f) return;
    const fd = new FormData(); fd.append("file", f);
    notice("loading " + f.name + "…");
    try {
      const r = await fetch("/api/machine/state", { method: "POST", body: fd, credentials: "same-origin",
        headers: { "X-CSRFToken": CSRF } });
      let j = null;
      try { j = await r.json(); } catch (err) { j = null; }
      if (!j || !j.ok) showError("load failed: " + ((j && j.error) || r.status)); else notice("loaded " + f.name);
    } catch (err) { showError("load failed: " + err); }
    $("load-file").value = "";
  });

  const dlg = $("new-dialog");
  // share: store the live recording on the server, show the link (copyable)
  $("btn-share").addEventListener("click", async () => {
    const btn = $("btn-share"); btn.disabled = true; notice("sharing…");
    try {
      const r = await fetch("/share", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": CSRF },
        body: JSON.stringify({ session_recording: true }),
      });
      let j = null;
      try { j = await r.json(); } catch (err) { j = null; }
      if (!r.ok || !j || !j.url) { showError("share failed: " + ((j && j.error) || r.status)); return; }
      const url = new URL(j.url, window.location.href).href;
      $("share-link").value = url; $("share-open").href = url;
      $("share-status").textContent = ""; $("share-box").hidden = false;
      notice("shared: " + url);
      $("share-link").focus(); $("share-link").select();
    } catch (err) {
      showError("share failed: " + err);
    } finally { btn.disabled = false; }
  });
  $("share-copy").addEventListener("click", async () => {
    const link = $("share-link");
    try { await navigator.clipboard.writeText(link.value); $("share-status").textContent = "copied"; }
    catch (err) { link.focus(); link.select(); $("share-status").textContent = "press Ctrl+C to copy"; }
  });

  $("btn-new").addEventListener("click", () => { $("new-error").textContent = ""; dlg.showModal(); });
  $("new-cancel").addEventListener("click", () => dlg.close());
  $("new-default").addEventListener("click", () => send("new_machine", { preset: "default" }, () => dlg.close()));
  $("new-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target.elements;
    const form = {
      boot_ram: +f.boot_ram.value, nodes: +f.nodes.value, device_size: +f.device_size.value,
      requested_size: +f.requested_size.value, block_size: +f.block_size.value,
      unplugged_inaccessible: f.unplugged_inaccessible.checked, rfc_shrink_on_reboot: f.rfc_shrink_on_reboot.checked,
    };
    socket.emit("new_machine", form, (r) => {
      if (r && r.ok) { dlg.close(); notice("new machine started"); } else $("new-error").textContent = (r && r.error) || "failed";
    });
  });

  window.addEventListener("resize", () => { for (const d of state.devices.values()) d.grid.layout(); });
  renderLegend();
})();
