"""/compare in Chromium: the action bar drives every machine, the grids are drawn and the
table fills with what each machine measured."""

from __future__ import annotations

from typing import Any

from webapp.live import LiveServer


def open_compare(chromium: Any, live_server: LiveServer) -> Any:
    context = chromium.new_context(viewport={"width": 1500, "height": 1100},
                                   base_url=live_server.url)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text)
            if msg.type == "error" else None)
    page.goto("/compare")
    return page


def run(page: Any, action: str, timeout: float = 60_000) -> None:
    """Click an action and wait until the lab has done one more action and is idle."""
    done = page.evaluate("(document.body.dataset.done || '').split(',').filter(Boolean)")
    page.click(f'button.action[data-action="{action}"]')
    page.wait_for_function(
        "([a, n]) => { const d = (document.body.dataset.done || '').split(',')"
        ".filter(Boolean); return document.body.dataset.busy === '' && d.length > n && "
        "d[d.length - 1] === a; }", arg=[action, len(done)], timeout=timeout)


def cell(page: Any, row: str, mechanism: str) -> str:
    return str(page.locator(f'tr[data-row="{row}"] td[data-mechanism="{mechanism}"]')
               .inner_text())


def test_compare_lab_end_to_end(chromium: Any, live_server: LiveServer) -> None:
    page = open_compare(chromium, live_server)
    try:
        assert page.locator('input[name="mechanism"]:checked').count() == 3
        page.click("#btn-start")
        page.wait_for_selector('article.column[data-mechanism="xen"]', timeout=30_000)
        page.wait_for_function("() => document.body.dataset.busy === ''", timeout=60_000)
        assert page.locator("article.column").count() == 3
        assert "behaviour model" in page.locator(
            'article.column[data-mechanism="xen"] .col-kind').inner_text()
        assert cell(page, "granularity", "dimm") == "256 MiB (a whole DIMM)"

        for action in ("pin", "give-back"):
            run(page, action)
        assert cell(page, "returned", "virtio-mem").startswith("1008 MiB of 1 GiB")
        assert cell(page, "returned", "dimm").startswith("768 MiB of 1 GiB")
        assert cell(page, "returned", "xen") == "1 GiB of 1 GiB"
        assert cell(page, "granularity", "virtio-mem") == "2 MiB (device block)"
        returned = page.locator('article.column[data-mechanism="virtio-mem"] canvas')
        page.wait_for_function(
            "() => Number(document.querySelector('article.column[data-mechanism=\"virtio-mem\"]"
            " canvas').dataset.returned) === 504", timeout=10_000)
        assert returned.count() == 1

        run(page, "rogue-write")
        assert cell(page, "cheat", "virtio-mem") == (
            "yes: shipped QEMU protects nothing; the host backs the page again")
        assert cell(page, "cheat", "dimm") == "no: the DIMM is gone, nothing is there"
        assert cell(page, "cheat", "xen") == "no: writing there killed the domain"
        page.wait_for_function(
            "() => document.querySelector('article.column[data-mechanism=\"xen\"]')"
            ".dataset.runstate === 'shutdown'", timeout=10_000)

        run(page, "reboot")
        assert cell(page, "reboot", "xen").startswith("sees 1.5 GiB, more than the host wants")
        assert cell(page, "reboot", "virtio-mem") == "sees 512 MiB"
        assert cell(page, "reboot", "dimm") == "sees 768 MiB"

        run(page, "reboot-no-driver")
        assert "the machine was killed" in cell(page, "no-driver", "xen")
        assert cell(page, "no-driver", "virtio-mem").startswith("sees 512 MiB; the workload")

        run(page, "reboot")
        run(page, "migrate")
        assert cell(page, "migration", "virtio-mem") == (
            "nothing: the destination has the same command line")
        assert 'Unknown ramblock "m-dimm0"' in cell(page, "migration", "dimm")
        assert cell(page, "migration", "xen").startswith("not modelled")
        filled = page.locator('td[data-filled="no"]').count()
        assert filled == 0  # every row measured on every machine
        assert page.errors == []
        page.click("#btn-stop")
        page.wait_for_selector("#start-form:not([hidden])", timeout=10_000)
    finally:
        page.context.close()


def test_compare_refusal_is_shown(chromium: Any, live_server: LiveServer) -> None:
    page = open_compare(chromium, live_server)
    try:
        page.wait_for_selector("#lab-status:has-text('no comparison running')")
        assert page.is_hidden("#action-bar")  # no lab: no actions to press ([hidden] wins)
        assert page.is_hidden("#results")
        for name in ("dimm", "xen"):
            page.uncheck(f'input[name="mechanism"][value="{name}"]')
        page.click("#btn-start")
        page.wait_for_function(
            "() => document.getElementById('start-error').textContent.length > 0")
        assert "choose two or three" in page.locator("#start-error").inner_text()
        assert page.locator("article.column").count() == 0
    finally:
        page.context.close()
