"""The experimental extensions in the page (docs/extensions.md), in Chromium: the presenter's
prompt for a guest request held by the 'ask' policy, and the autoscaler's decisions drawn on
the 'requested vs plugged' chart."""

from __future__ import annotations

import threading
from typing import Any

from control import control_for
from control.autoscaler import AutoscalePolicy
from emulator.config import MiB
from emulator.machine import Machine
from webapp.pages import TOKEN


def _lesson_machine(page: Any, live_server: Any) -> Machine:
    """Start lesson 'the addendum' for this page's session and reload the sandbox."""
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post("/lessons/09-the-addendum/start", headers={"X-CSRFToken": csrf},
                               max_redirects=0)
    assert answer.status == 302, answer.status
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == "session")
    app = live_server.app
    token = app.session_interface.get_signing_serializer(app).loads(cookie)[TOKEN]
    sess = live_server.manager.get(token)
    assert sess is not None and sess.machine is not None
    machine = sess.machine
    assert machine.wait_until(lambda m: m.guest_booted, 30)
    assert control_for(machine).wait_settled(30)
    page.goto("/")
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
    return machine


def test_the_presenter_grants_and_denies_from_the_page(new_page, live_server) -> None:
    page = new_page()
    machine = _lesson_machine(page, live_server)
    ctl = control_for(machine)
    ctl.requests.set_policy("vm0", "ask")
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(ctl.requests.grow(16 * MiB)))
    worker.start()
    prompt = page.locator("#guest-request")
    prompt.wait_for(state="visible", timeout=20_000)
    text = page.locator("#guest-request-text").text_content() or ""
    assert "vm0: the guest needs 16 MiB on node 0" in text
    assert "grow: alloc of 16 MiB failed" in text
    page.reload()  # a new page learns of the waiting request from its keyframe
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
    prompt.wait_for(state="visible", timeout=20_000)
    page.locator("#guest-request-grant").click()
    page.wait_for_function(
        "() => document.getElementById('guest-request').hidden === false && "
        "document.getElementById('guest-request-text').textContent.includes('requested size "
        "now 16 MiB')", timeout=20_000)  # the second request, after the grant was plugged
    page.locator("#guest-request-deny").click()
    worker.join(30)
    assert done and done[0].granted == 1 and done[0].denied == 1
    page.wait_for_function("() => document.getElementById('guest-request').hidden === true",
                           timeout=10_000)
    assert machine.devices["vm0"].plugged_size == 16 * MiB
    assert page.errors == []


def test_autoscaler_decisions_are_drawn_on_the_chart(new_page, live_server) -> None:
    page = new_page()
    machine = _lesson_machine(page, live_server)
    ctl = control_for(machine)
    page.wait_for_function("() => window.Plotly && document.getElementById('chart-sizes').data",
                           timeout=30_000)
    ctl.autoscale.enable("vm0", AutoscalePolicy(low=512 * MiB, high=1024 * MiB,
                                                step=64 * MiB, max_size=64 * MiB,
                                                interval=0.05))
    assert machine.wait_until(lambda m: m.devices["vm0"].requested_size == 64 * MiB, 20)
    page.wait_for_function(
        "() => { const d = document.getElementById('chart-sizes').data;"
        " const t = d[d.length - 1]; return t.name.startsWith('autoscaler decisions') &&"
        " t.y.length === 1 && t.y[0] === 64 && t.text[0].includes('grow to 64 MiB'); }",
        timeout=20_000)
    ctl.autoscale.disable("vm0")
    assert page.errors == []
