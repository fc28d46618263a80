"""The page under its Content-Security-Policy, and hostile names shown as text (Chromium).

The CSP (webapp/headers.py) forbids inline scripts and eval: the page must still draw its
grids and Plotly charts without a single ``securitypolicyviolation``, and its monitor lists
only the commands a visitor may run. Machine and device names from a shared recording or a
machine's configuration are attacker-chosen: they must render as text and never run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from device.errors import ConfigError
from emulator.config import MachineConfig, MemoryDeviceConfig, MiB
from webapp.live import LiveServer
from webapp.pages import TOKEN

PAYLOAD = '<img src=x onerror="window.__xss=(window.__xss||0)+1">'
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def _open(chromium: Any, live_server: LiveServer, path: str) -> tuple[Any, Any, list[str]]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000},
                                   base_url=live_server.url)
    context.add_init_script(WATCH_CSP)
    context.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")  # no tour over it
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(path)
    return context, page, dialogs


def test_the_page_works_under_its_csp(chromium: Any, live_server: LiveServer) -> None:
    context, page, _ = _open(chromium, live_server, "/")
    try:
        csp = page.evaluate(
            "() => fetch('/').then((r) => r.headers.get('content-security-policy'))")
        assert "script-src 'self'" in csp
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
        page.wait_for_function(  # the grid drew its plugged blocks
            "() => document.querySelector('canvas.grid[data-device=\"vm0\"]')"
            "?.dataset.plugged === '32'", timeout=15_000)
        page.wait_for_function(  # Plotly (loaded on demand) drew all three charts
            "() => document.querySelectorAll('.chart .main-svg').length >= 3", timeout=20_000)
        # the monitor: help lists only what a visitor may run, migrate is refused
        for line in ("help", "migrate \"exec:cat > /tmp/vmemlab-csp-test\""):
            page.fill("#hmp-in", line)
            page.press("#hmp-in", "Enter")
        page.wait_for_function(
            "() => document.getElementById('hmp-out').textContent.includes('not available')")
        out = page.inner_text("#hmp-out")
        assert "info [subcommand]" in out and "qom-set" in out
        assert "quit the emulator" not in out and "migrate to URI" not in out
        assert "not available in the browser monitor: 'migrate'" in out
        assert not Path("/tmp/vmemlab-csp-test").exists()
        pong = page.evaluate(  # the socket works
            "async () => (await import('/static/transport.js')).send('ping_vmem', {})")
        assert pong["ok"]
        assert page.evaluate("() => window.__csp") == []
        assert page.errors == []
    finally:
        context.close()
        live_server.manager.close_sessions()


def _recording(name: str, dev_id: str) -> str:
    header = {"format": "vmemlab-recording", "version": 1, "title": PAYLOAD, "created": 0,
              "machines": {name: {}}}
    state = {"runstate": PAYLOAD, "nodes": [], "devices": {dev_id: {
        "node": 0, "block_size": 2 * MiB, "nb_blocks": 4, "requested_size": 0,
        "plugged_size": 0, "usable_region_size": 8 * MiB, "driver_state": PAYLOAD,
        "bitmap": "00"}}}
    entries = [
        {"t": 0.0, "type": "keyframe", "machine": name, "state": state},
        {"t": 0.5, "type": "say", "text": PAYLOAD},
        {"t": 1.0, "type": "step", "index": 1, "kind": "say", "title": PAYLOAD, "ok": True,
         "summary": PAYLOAD},
    ]
    return "\n".join(json.dumps(x) for x in [header, *entries]) + "\n"


def test_hostile_names_in_a_shared_recording_render_as_text(
        chromium: Any, live_server: LiveServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(live_server.app.config, "VMEMLAB_SHARE_DIR", str(tmp_path))
    name, dev_id = f"main{PAYLOAD}", f"vm0{PAYLOAD}"
    # stored as a share is stored (even if upload checks tighten, old files stay)
    (tmp_path / "Xss_0001.ndjson").write_text(_recording(name, dev_id))
    context, page, dialogs = _open(chromium, live_server, "/s/Xss_0001")  # no click needed
    try:
        page.wait_for_function(
            "() => document.getElementById('replay').dataset.loaded === '1'")
        assert page.inner_text("#rec-title") == PAYLOAD
        assert page.inner_text(".rec-machine h2").startswith(name)
        label = page.locator(".rec-dev-label")
        assert label.get_attribute("data-dev") == dev_id and dev_id in label.inner_text()
        assert page.locator("#replay img").count() == 0
        page.click("#rec-step")
        assert PAYLOAD in page.inner_text("#rec-steps")
        assert page.evaluate("() => window.__xss") is None and dialogs == []
        assert page.evaluate("() => window.__csp") == []
        assert page.errors == []
    finally:
        context.close()


def test_hostile_text_on_the_sandbox_renders_as_text(chromium: Any,
                                                     live_server: LiveServer) -> None:
    """Device ids are identifiers everywhere now (``Parameter 'id' expects an identifier``),
    so the free text a page shows is the guest's command line: the header summary and the
    RESET line of the log must show it as text."""
    hostile = MachineConfig(boot_ram=64 * MiB, devices=[MemoryDeviceConfig(
        id=f"vm0{PAYLOAD}", memdev="mem0", size=256 * MiB, requested_size=64 * MiB)])
    with pytest.raises(ConfigError, match="Parameter 'id' expects an identifier"):
        hostile.layout()
    cfg = MachineConfig(boot_ram=64 * MiB, cmdline=PAYLOAD, devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=256 * MiB, requested_size=64 * MiB)])
    context, page, dialogs = _open(chromium, live_server, "/")
    try:
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
        token = next(c["value"] for c in context.cookies() if c["name"] == "session")
        with live_server.app.test_request_context(headers={"Cookie": f"session={token}"}):
            from flask import session

            live_server.manager.replace(session[TOKEN], cfg)
        page.wait_for_function(  # the default machine has a cmdline too: wait for this one
            "() => document.getElementById('summary').textContent.includes('onerror')",
            timeout=15_000)
        assert PAYLOAD in page.inner_text("#summary")
        page.click("#btn-reboot")
        page.wait_for_function(
            "() => document.getElementById('vq-log').textContent.includes('onerror')",
            timeout=15_000)
        assert page.locator("img").count() == 0
        assert page.evaluate("() => window.__xss") is None and dialogs == []
        assert page.evaluate("() => window.__csp") == []
        assert page.errors == []
    finally:
        context.close()
        live_server.manager.close_sessions()
