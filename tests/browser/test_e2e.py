"""The sandbox in a real browser: Chromium + Playwright against the live server.

Assertions read what was drawn (the canvas's data attributes, set by the draw itself, and
canvas pixels), never the network; numbers are checked against the JSON API's
``query-memory-devices`` from the same browser context (same cookie, same machine).

The page's own state is read through its model module (``static/model.js``), imported in the
page: the same instance the page uses (the page puts nothing on ``window``).
"""

from __future__ import annotations

import time
from typing import Any

from webapp.block_states import STATES, VIEWS, BlockState

MiB = 1024 * 1024
SKY_BLUE = (86, 180, 233)  # plugged, free
LIGHT_GREY = (228, 228, 228)  # unplugged


def canvas(dev: str) -> str:
    return f'canvas.grid[data-device="{dev}"]'


def wait_plugged(page: Any, dev: str, blocks: int, timeout: float = 15_000) -> None:
    page.wait_for_function(
        f"() => document.querySelector('{canvas(dev)}')?.dataset.plugged === '{blocks}'",
        timeout=timeout)


def plugged(page: Any, dev: str) -> int:
    return int(page.get_attribute(canvas(dev), "data-plugged"))


def pixel(page: Any, dev: str, block: int) -> tuple[int, int, int]:
    """Colour drawn inside block ``block`` (away from patterns and pulse rings)."""
    return tuple(page.evaluate(
        """async ([dev, i]) => {
            const { model } = await import("/static/model.js");
            const g = model.devices.get(dev).grid;
            const px = g.cell * g.dpr;
            const x = (i % g.cols) * px + Math.floor(px * 0.35);
            const y = Math.floor(i / g.cols) * px + Math.floor(px * 0.35);
            return Array.from(g.ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
        }""", [dev, block]))


def codes(page: Any, dev: str, view: str) -> list[int]:
    """The block codes the page holds for ``dev`` in ``view`` (what its grid draws there)."""
    return list(page.evaluate(
        """async ([dev, view]) => {
            const { model } = await import("/static/model.js");
            return Array.from(model.devices.get(dev).grid.codes[view]);
        }""", [dev, view]))


def qmp_devices(page: Any) -> dict[str, dict[str, Any]]:
    answer = page.request.get("/api/machine/memory-devices").json()
    return {d["data"]["id"]: d["data"] for d in answer["return"]}


def set_requested(page: Any, dev: str, mib: int) -> None:
    field = page.locator(f'.device[data-device="{dev}"] .req-number')
    field.fill(str(mib))
    field.press("Enter")


def test_requested_size_change_is_drawn_and_matches_qmp(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    wait_plugged(page, "vm1", 16)
    # the register map highlights a changed field for 2.5 s: record that it happened, so a
    # slow (loaded) test run cannot miss it between two polls
    page.evaluate("""() => {
        window.__sawChanged = false;
        new MutationObserver(() => {
            if (document.querySelector('#config-table tr[data-field="plugged_size"].changed'))
                window.__sawChanged = true;
        }).observe(document.getElementById('config-table'),
                   {subtree: true, attributes: true, childList: true});
    }""")
    set_requested(page, "vm0", 128)
    wait_plugged(page, "vm0", 64)
    page.wait_for_timeout(600)  # let the "just changed" rings fade
    assert pixel(page, "vm0", 0) == SKY_BLUE
    assert pixel(page, "vm0", 63) == SKY_BLUE
    assert pixel(page, "vm0", 64) == LIGHT_GREY
    qmp = qmp_devices(page)
    assert qmp["vm0"]["size"] == 128 * MiB == plugged(page, "vm0") * 2 * MiB
    card = page.locator('.device[data-device="vm0"]')
    page.wait_for_function(
        "() => document.querySelector('.device[data-device=\"vm0\"]').dataset.plugged == 134217728")
    assert card.get_attribute("data-requested") == str(qmp["vm0"]["requested-size"])
    assert "plugged 128 MiB" in card.inner_text().replace("\n", " ")
    page.wait_for_function("() => window.__sawChanged === true")
    page.wait_for_function(
        "() => /PLUG .* → ACK/.test(document.getElementById('vq-log').textContent)")
    # host view: what the host backs; unplugged blocks have no host memory at all
    page.check('input[name="view"][value="host"]')
    page.wait_for_function(
        f"() => document.querySelector('{canvas('vm0')}').dataset.mode === 'host'")
    assert plugged(page, "vm0") == 64
    assert "resident" in page.inner_text("#legend")
    assert pixel(page, "vm0", 100) == LIGHT_GREY
    host = codes(page, "vm0", "host")
    # unplugged or outside: never resident
    assert set(host[64:]) <= {BlockState.UNPLUGGED, BlockState.OUTSIDE_USABLE}
    page.wait_for_function("() => !!document.querySelector('#chart-sizes .main-svg')")  # charts
    assert page.errors == []


def test_reboot_unplugs_all_and_the_guest_plugs_back(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    page.click("#btn-reboot-nodriver")
    wait_plugged(page, "vm0", 0)
    wait_plugged(page, "vm1", 0)
    page.wait_for_function("() => document.getElementById('console').textContent"
                           ".includes('modprobe.blacklist=virtio_mem') || "
                           "document.getElementById('summary').textContent.includes('blacklist')")
    page.click("#btn-reboot-driver")
    wait_plugged(page, "vm0", 32)
    wait_plugged(page, "vm1", 16)
    page.click("#btn-reboot")
    page.wait_for_function(
        "() => document.getElementById('vq-log').textContent.split('RESET').length > 3")
    # the RESET line can come before the batch that unplugs: the QMP size, not the grid,
    # says the guest plugged its 64 MiB again
    deadline = time.monotonic() + 15
    while qmp_devices(page)["vm0"]["size"] != 64 * MiB and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert qmp_devices(page)["vm0"]["size"] == 64 * MiB
    wait_plugged(page, "vm0", 32)
    assert page.get_attribute("#runstate", "data-state") == "running"


def test_two_browser_contexts_do_not_see_each_others_machines(new_page):
    first, second = new_page(), new_page()
    wait_plugged(first, "vm0", 32)
    wait_plugged(second, "vm0", 32)
    set_requested(first, "vm0", 200)
    wait_plugged(first, "vm0", 100)
    second.wait_for_timeout(500)
    assert plugged(second, "vm0") == 32
    assert qmp_devices(second)["vm0"]["requested-size"] == 64 * MiB
    assert qmp_devices(first)["vm0"]["requested-size"] == 200 * MiB


def test_rogue_write_bad_input_and_the_hmp_console(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    # a rogue write into an unplugged block: shipped QEMU lets it through (no violation)
    page.select_option("#rogue-device", "vm0")
    page.click("#btn-rogue")
    page.wait_for_function(
        "() => document.getElementById('action-result').textContent"
        ".includes('went through')")
    assert page.get_attribute("#devices", "data-violations") in (None, "0")
    # bad input: an error in the page, never a traceback; the machine keeps running
    set_requested(page, "vm0", 3)
    page.wait_for_selector("#error:not([hidden])")
    assert "multiples of 'block-size'" in page.inner_text("#error-text")
    set_requested(page, "vm0", 96)
    wait_plugged(page, "vm0", 48)
    # the HMP console inside the page
    page.fill("#hmp-in", "info memory-devices")
    page.press("#hmp-in", "Enter")
    page.wait_for_function(
        "() => document.getElementById('hmp-out').textContent.split('\\n').length > 2")
    assert "(qemu) info memory-devices" in page.inner_text("#hmp-out")
    assert page.errors == []


def test_save_and_load_bring_back_an_identical_grid(new_page, tmp_path):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    set_requested(page, "vm0", 100)
    wait_plugged(page, "vm0", 50)
    page.wait_for_timeout(400)
    before = codes(page, "vm0", "guest")
    with page.expect_download() as info:
        page.click("#btn-save")
    path = tmp_path / "machine.vmstate"
    info.value.save_as(path)
    set_requested(page, "vm0", 20)
    wait_plugged(page, "vm0", 10)
    page.set_input_files("#load-file", str(path))
    wait_plugged(page, "vm0", 50)
    page.wait_for_timeout(400)
    after = codes(page, "vm0", "guest")
    assert after == before


def test_new_machine_form(new_page):
    page = new_page()
    page.click("#btn-new")
    page.fill('#new-form input[name="nodes"]', "1")
    page.fill('#new-form input[name="device_size"]', "128")
    page.fill('#new-form input[name="requested_size"]', "32")
    page.select_option('#new-form select[name="block_size"]', "4")
    page.click("#new-create")
    page.wait_for_function("() => document.querySelectorAll('canvas.grid').length === 1")
    wait_plugged(page, "vm0", 8)
    assert page.get_attribute(canvas("vm0"), "data-blocks") == "32"


def test_narrow_window_and_keyboard(new_page):
    page = new_page(width=760, height=900)
    wait_plugged(page, "vm0", 32)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    slider = page.locator('.device[data-device="vm0"] .req-slider')
    slider.focus()
    page.keyboard.press("ArrowRight")  # one block more, from the keyboard alone
    wait_plugged(page, "vm0", 33)


def test_the_legend_is_the_servers_table_and_the_page_adds_no_globals(new_page):
    page = new_page()
    flashes = ["flash: read of the zero page", "flash: blocked write (violation)"]
    for view in ("guest", "host"):
        page.check(f'input[name="view"][value="{view}"]')
        page.wait_for_function(
            f"() => document.querySelector('{canvas('vm0')}').dataset.mode === '{view}'")
        shown = [li.inner_text().strip() for li in page.locator("#legend li").all()]
        assert shown == [STATES[s].label for s in VIEWS[view]] + flashes
    # every name on window comes from a vendor script (the page's modules share by import)
    page.wait_for_function("() => document.querySelectorAll('.chart .main-svg').length >= 3",
                           timeout=20_000)
    names = set(page.evaluate("() => Object.keys(window)"))
    vendor = page.context.new_page()
    vendor.goto("/healthz")
    for script in ("socket.io.min.js", "plotly.min.js"):
        vendor.add_script_tag(url=f"/static/vendor/{script}")
    assert names <= set(vendor.evaluate("() => Object.keys(window)"))
    assert page.errors == []
