"""The teaching pace and the grid's Linux structure in a real browser (Chromium + Playwright
against the live server, real machines): what the student sees, read from what was drawn."""

from __future__ import annotations

import time
from typing import Any

from tests.browser.test_e2e import canvas, set_requested, wait_plugged

MiB = 1024 * 1024
CARD = '.device[data-device="vm0"]'


def new_machine(page: Any, device_mib: int, requested_mib: int) -> None:
    """One node, one device of ``device_mib`` (2 MiB blocks), through the page's dialog."""
    page.click("#btn-new")
    page.fill('#new-form input[name="nodes"]', "1")
    page.fill('#new-form input[name="device_size"]', str(device_mib))
    page.fill('#new-form input[name="requested_size"]', str(requested_mib))
    page.select_option('#new-form select[name="block_size"]', "2")
    page.click("#new-create")
    page.wait_for_function(f"() => document.querySelectorAll('canvas.grid').length === 1 && "
                           f"document.querySelector('{canvas('vm0')}').dataset.blocks === "
                           f"'{device_mib // 2}'")
    wait_plugged(page, "vm0", requested_mib // 2)
    page.wait_for_function(f"() => document.querySelector('{CARD} .driver').textContent "
                           "=== 'idle'")


def set_pace(page: Any, ms: int) -> None:
    page.select_option("#pace", str(ms))
    page.wait_for_function(f"() => document.getElementById('pace-box').dataset.pace === '{ms}'")


def watch(page: Any) -> None:
    """Record (in the test's own global) every plugged count the grid drew and every text
    the in-flight badge showed."""
    page.evaluate(f"""async () => {{
        const {{ model }} = await import("/static/model.js");
        const {{ CODE }} = await import("/static/block-states.js");
        const grid = model.devices.get("vm0").grid;
        const c = document.querySelector('{canvas("vm0")}');
        const badge = document.querySelector('{CARD} .inflight');
        window.__seen = {{ plugged: [c.dataset.plugged], badge: [], inflight: [] }};
        new MutationObserver(() => {{
            const s = window.__seen.plugged;
            if (s[s.length - 1] !== c.dataset.plugged) s.push(c.dataset.plugged);
            // the first block the grid drew in flight, after each draw
            const i = grid.codes.guest.indexOf(CODE.IN_FLIGHT), f = window.__seen.inflight;
            if (i >= 0 && f[f.length - 1] !== i) f.push(i);
        }}).observe(c, {{ attributes: true, attributeFilter: ["data-plugged", "data-frames"] }});
        new MutationObserver(() => {{
            if (!badge.hidden) window.__seen.badge.push(badge.textContent);
        }}).observe(badge, {{ attributes: true, childList: true, characterData: true,
                              subtree: true }});
    }}""")


def seen(page: Any) -> dict[str, list[str]]:
    return page.evaluate("() => window.__seen")


def in_flight_cells(page: Any) -> int:
    return int(page.evaluate("""async () => {
        const { model } = await import("/static/model.js");
        const { CODE } = await import("/static/block-states.js");
        return model.devices.get("vm0").grid.codes.guest.filter((c) => c === CODE.IN_FLIGHT)
            .length;
    }"""))


def test_a_paced_512m_plug_is_four_visible_steps(new_page):
    page = new_page(width=1440, height=900)
    new_machine(page, 1024, 0)
    set_pace(page, 500)  # each request in flight for half a second: a loaded browser draws it
    watch(page)
    set_requested(page, "vm0", 512)
    # mid-plug: a request is held in flight and the grid draws its blocks in flight
    page.wait_for_function(f"() => !document.querySelector('{CARD} .inflight').hidden")
    assert in_flight_cells(page) == 64
    assert "teaching pace holds the request" in page.inner_text("#explain")
    wait_plugged(page, "vm0", 256, timeout=20_000)
    got = seen(page)
    # four requests, each held in flight and drawn so on its own memory block's row
    assert got["inflight"] == [0, 64, 128, 192], got
    addresses = {text.split()[4] for text in got["badge"] if "PLUG" in text}
    assert len(addresses) == 4, got["badge"]
    # and the plugged count grew in steps (a page may draw two answers in one frame)
    steps = [int(v) for v in got["plugged"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 256 and len(steps) >= 4
    page.wait_for_function(f"() => document.querySelector('{CARD} .inflight').hidden")
    assert page.errors == []


def test_step_one_request_advances_exactly_one_request(new_page):
    page = new_page()
    new_machine(page, 1024, 0)
    page.click("#btn-pause")
    page.wait_for_selector('#runstate[data-state="paused"]')
    set_requested(page, "vm0", 384)
    time.sleep(0.5)
    assert page.get_attribute(canvas("vm0"), "data-plugged") == "0"  # paused: nothing moves
    for blocks in (64, 128):
        page.click("#btn-step-request")
        wait_plugged(page, "vm0", blocks)
        page.wait_for_function("() => document.getElementById('pace-box').dataset.stepping"
                               " === '0' && document.getElementById('runstate').dataset.state"
                               " === 'paused'")
        time.sleep(0.5)
        assert page.get_attribute(canvas("vm0"), "data-plugged") == str(blocks)
    page.click("#btn-resume")
    wait_plugged(page, "vm0", 192)


def test_pause_after_reset_keeps_the_grid_all_unplugged(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    page.check("#pause-after-reset")
    page.wait_for_function("() => document.getElementById('pause-after-reset').checked")
    time.sleep(0.3)  # the socket event has been answered by then
    page.click("#btn-reboot")
    page.wait_for_selector('#runstate[data-state="paused"]')
    wait_plugged(page, "vm0", 0)
    time.sleep(1.0)
    assert page.get_attribute(canvas("vm0"), "data-plugged") == "0"
    assert page.get_attribute("#runstate", "data-state") == "paused"
    assert "everything is unplugged until you continue" in page.inner_text("#explain")
    page.click("#btn-resume")
    wait_plugged(page, "vm0", 32)


def test_memory_block_rows_carry_their_addresses(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    # 256 MiB of 2 MiB blocks, Linux memory blocks of 128 MiB (the guest's own): two rows
    page.wait_for_function(f"() => document.querySelectorAll('{CARD} .mb-labels li')"
                           ".length === 2")
    labels = page.locator(f"{CARD} .mb-labels li").all_inner_texts()
    addr = page.request.get("/api/machine/memory-devices").json()["return"][0]["data"][
        "memaddr"]
    assert labels[0].split() == [hex(addr), f"memory{addr // (128 * MiB)}"]
    assert labels[1].split()[0] == hex(addr + 128 * MiB)
    assert page.get_attribute(canvas("vm0"), "data-cols") == "64"
    # the zone on hover, once the guest has added and onlined the block
    page.wait_for_function(f"() => /^memory{addr // (128 * MiB)}: ZONE_NORMAL /.test("
                           f"document.querySelector('{CARD} .mb-labels li').title)")


def test_in_flight_badge_is_off_after_an_unplug_stopped_short(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    page.fill("#alloc-size", "40")
    page.select_option("#alloc-kind", "unmovable")
    page.select_option("#alloc-target", "vm0")
    page.click("#alloc-form button[type=submit]")
    page.wait_for_function("() => !/allocating/.test(document.getElementById('action-result')"
                           ".textContent) && document.getElementById('action-result')"
                           ".textContent !== ''")
    set_requested(page, "vm0", 0)
    page.wait_for_function(f"() => document.querySelector('{CARD} .driver').textContent "
                           "=== 'stopped-short'", timeout=20_000)
    time.sleep(0.5)  # a view or two later: still nothing in flight
    card = page.locator(CARD)
    assert card.get_attribute("data-plugged") != card.get_attribute("data-requested")
    assert page.locator(f"{CARD} .inflight").is_hidden()
    # the event can come before the view that draws the blocks it left: the line is
    # re-derived from each newer view
    page.wait_for_function("() => /unplug stopped short: blocks 0x.* hold unmovable pages/"
                           ".test(document.getElementById('explain').textContent)",
                           timeout=10_000)


def test_an_empty_size_box_is_refused_not_zero_and_a_tap_shows_a_cell(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    page.fill(f"{CARD} .req-number", "")
    page.click(f"{CARD} .req-set")
    page.wait_for_selector("#error:not([hidden])")
    assert "type a requested size" in page.inner_text("#error-text")
    time.sleep(0.5)
    assert page.get_attribute(canvas("vm0"), "data-plugged") == "32"
    # an allocation the guest cannot satisfy: no "allocating..." left behind, ENOMEM explained
    page.fill("#alloc-size", "400")  # within the budget, beyond the guest's memory
    page.click("#alloc-form button[type=submit]")
    page.wait_for_function("() => /allocation failed/.test(document.getElementById("
                           "'action-result').textContent)")
    assert "(ENOMEM): plug more memory" in page.inner_text("#action-result")
    box = page.locator(canvas("vm0")).bounding_box()
    page.mouse.click(box["x"] + 3, box["y"] + 3)  # a tap is a click: the details appear
    page.wait_for_function("() => /vm0 block 0 @/.test(document.getElementById('tooltip')"
                           ".textContent)")


def test_a_large_device_aggregates_cells_and_zooms_to_every_block(new_page):
    page = new_page(width=1440, height=900)
    new_machine(page, 6144, 256)  # 3072 blocks of 2 MiB: cells of 2 blocks, 2 memory blocks a row
    grid = canvas("vm0")
    page.wait_for_function(f"() => document.querySelector('{grid}').dataset.agg === '2'")
    assert page.get_attribute(grid, "data-cols") == "64"
    assert page.get_attribute(grid, "data-blocks") == "3072"
    assert page.get_attribute(grid, "data-plugged") == "128"  # counted per block, not cell
    first = page.locator(f"{CARD} .mb-labels li").first.inner_text()
    name = first.split()[1]  # two memory blocks a row: "memoryN" EN DASH "M"
    assert name.count("memory") == 1 and "\u2013" in name
    page.click(f"{CARD} .zoom")
    page.wait_for_function(f"() => document.querySelector('{grid}').dataset.agg === '1'")
    assert page.get_attribute(grid, "data-cols") == "64"  # one memory block a row again
    assert page.locator(f"{CARD} .mb-labels li").count() == 3072 // 64
    page.click(f"{CARD} .zoom")
    page.wait_for_function(f"() => document.querySelector('{grid}').dataset.agg === '2'")
    assert page.errors == []


def test_a_dump_leaves_one_zero_page_line_per_device_not_one_per_read(new_page):
    page = new_page()
    wait_plugged(page, "vm0", 32)
    set_requested(page, "vm0", 100)  # half a memory block: the other half reads as zeros
    wait_plugged(page, "vm0", 50)
    # the RFC's / a pre-5.16 kdump reads every page of the added memory, unplugged too
    page.fill("#hmp-in", "guest dump --legacy vm0")
    page.press("#hmp-in", "Enter")
    page.wait_for_function("() => /read \\d+ bytes/.test(document.getElementById('hmp-out')"
                           ".textContent)", timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#vq-log li.zero').length > 0")
    time.sleep(0.5)
    lines = page.locator("#vq-log li.zero").all_inner_texts()
    vm0 = [line for line in lines if line.startswith("vm0:")]
    assert len(vm0) == 1, lines
    assert vm0[0].startswith("vm0: zero-page reads: ") and " blocks" in vm0[0]
    blocks = int(vm0[0].split("zero-page reads: ")[1].split()[0])
    assert 0 < blocks <= 128
    assert "the host answered with the shared zero page" in page.inner_text("#explain")


def test_grids_action_bar_and_explanation_share_one_screen_at_1440x900(new_page):
    page = new_page(width=1440, height=900)
    wait_plugged(page, "vm0", 32)
    page.wait_for_function("() => document.querySelectorAll('.mb-labels li').length >= 4")
    boxes = {sel: page.locator(sel).bounding_box() for sel in
             ("#action-bar", "#explain", canvas("vm0"), canvas("vm1"), "#btn-step-request",
              "#btn-dump", "#pace")}
    for sel, box in boxes.items():
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 900, (sel, box)
    # cause before effect: the actions and the "why" line sit above the grids
    assert boxes["#explain"]["y"] < boxes[canvas("vm0")]["y"]
