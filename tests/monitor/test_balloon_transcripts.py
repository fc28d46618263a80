"""Every balloon command and error of reference/qemu-transcripts/11_balloon.txt (QEMU 7.2 +
Linux 6.1), byte for byte: HMP output, QMP answers and error classes, QOM listings."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from control import control_for
from emulator import Machine
from monitor.commands import MonitorError, context_for, describe_error
from monitor.hmp import run_hmp
from monitor.qmp import QmpSession

from .conftest import Builder

BALLOON = ["-m", "1G", "-device", "virtio-balloon-pci,id=balloon0"]
BALLOON_OOM = ["-m", "1G", "-device",
               "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on"]
NO_BALLOON = ["-m", "1G"]
MiB = 1 << 20

PCI_LIST = """\
type (string)
parent_bus (link<bus>)
realized (bool)
hotplugged (bool)
hotpluggable (bool)
failover_pair_id (str)
romfile (str)
addr (int32)
romsize (uint32)
x-pcie-lnksta-dllla (bool)
rombar (uint32)
x-pcie-extcap-init (bool)
acpi-index (uint32)
multifunction (bool)
legacy-addr (str)
migrate-extra (bool)
ats (bool)
x-ignore-backend-features (bool)
x-pcie-pm-init (bool)
aer (bool)
x-pcie-flr-init (bool)
x-pcie-lnkctl-init (bool)
x-ats-page-aligned (bool)
page-per-vq (bool)
x-pcie-deverr-init (bool)
virtio-pci-bus-master-bug-migration (bool)
modern-pio-notify (bool)
x-disable-pcie (bool)
disable-legacy (OnOffAuto)
disable-modern (bool)
free-page-reporting (bool)
indirect_desc (bool)
virtio-pci-device-virtio-balloon[0] (child<memory-region>)
iommu_platform (bool)
deflate-on-oom (bool)
use-disabled-flag (bool)
event_idx (bool)
bus master container[0] (child<memory-region>)
page-poison (bool)
guest-stats-polling-interval (int)
guest-stats (guest statistics)
x-disable-legacy-check (bool)
any_layout (bool)
iothread (link<iothread>)
notify_on_empty (bool)
virtio-pci-notify-virtio-balloon[0] (child<memory-region>)
queue_reset (bool)
qemu-4-0-config-size (bool)
packed (bool)
use-started (bool)
free-page-hint (bool)
virtio-pci[1] (child<memory-region>)
virtio-pci-notify-pio-virtio-balloon[0] (child<memory-region>)
virtio-pci-common-virtio-balloon[0] (child<memory-region>)
virtio-pci[0] (child<memory-region>)
virtio-pci-isr-virtio-balloon[0] (child<memory-region>)
bus master[0] (child<memory-region>)
virtio-bus (child<virtio-pci-bus>)
virtio-backend (child<virtio-balloon-device>)
"""
BACKEND_LIST = """\
type (string)
parent_bus (link<bus>)
realized (bool)
hotplugged (bool)
hotpluggable (bool)
queue_reset (bool)
use-disabled-flag (bool)
packed (bool)
iommu_platform (bool)
event_idx (bool)
x-disable-legacy-check (bool)
notify_on_empty (bool)
any_layout (bool)
use-started (bool)
indirect_desc (bool)
legacy-iothread (str)
iothread (link<iothread>)
deflate-on-oom (bool)
free-page-hint (bool)
page-poison (bool)
qemu-4-0-config-size (bool)
free-page-reporting (bool)
guest-stats-polling-interval (int)
guest-stats (guest statistics)
"""


def qmp(machine: Machine, execute: str, arguments: dict[str, Any] | None = None,
        ident: str = "c1") -> dict[str, Any]:
    """One QMP request through the real session code; the answer as QEMU encodes it."""
    session = QmpSession(context_for(machine))
    session.negotiated = True
    msg: dict[str, Any] = {"execute": execute, "id": ident}
    if arguments is not None:
        msg["arguments"] = arguments
    ident_, work, response = session.prepare(msg)
    if response is None:
        assert work is not None
        try:
            response = {"return": work(), "id": ident_}
        except Exception as err:  # the server's own translation
            merr = err if isinstance(err, MonitorError) else describe_error(err)
            response = {"id": ident_, "error": {"class": merr.cls, "desc": merr.desc}}
    return json.loads(json.dumps(response))


def hmp(machine: Machine, line: str) -> str:
    return run_hmp(machine, line)


def reach(machine: Machine, mib: int, timeout: float = 30) -> None:
    assert machine.wait_until(
        lambda m: hmp(m, "info balloon") == f"balloon: actual={mib}\n", timeout), \
        hmp(machine, "info balloon")


# ---------------------------------------------------------------------------- 11a


def test_11a_no_balloon_device_hmp_and_qmp(build: Builder) -> None:
    m = build(NO_BALLOON, settle=False)
    assert hmp(m, "info balloon") == "Error: No balloon device has been activated\n"
    assert hmp(m, "balloon 512") == "Error: No balloon device has been activated\n"
    not_active = {"class": "DeviceNotActive", "desc": "No balloon device has been activated"}
    assert qmp(m, "query-balloon", ident="c2") == {"id": "c2", "error": not_active}
    assert qmp(m, "balloon", {"value": 536870912}, "c3") == {"id": "c3", "error": not_active}
    assert qmp(m, "balloon", {"value": 0}, "c4") == {"id": "c4", "error": not_active}


# ---------------------------------------------------------------------------- 11b


def test_11b_before_the_driver_the_target_waits_and_the_driver_applies_it(
        build: Builder) -> None:
    m = build(BALLOON, start=False)
    m.start(paused=True)  # -S: the guest driver is not there yet
    assert hmp(m, "info balloon") == "balloon: actual=1024\n"
    assert qmp(m, "query-balloon", ident="c2") == {"return": {"actual": 1073741824},
                                                   "id": "c2"}
    assert hmp(m, "balloon 512") == ""
    assert hmp(m, "info balloon") == "balloon: actual=1024\n"
    assert hmp(m, "cont") == ""
    reach(m, 512)
    assert qmp(m, "query-balloon", ident="c3") == {"return": {"actual": 536870912},
                                                   "id": "c3"}
    assert hmp(m, "balloon 1024") == ""
    reach(m, 1024)


def test_11b_monitor_views_after_boot(build: Builder) -> None:
    m = build(BALLOON)
    assert hmp(m, "info balloon") == "balloon: actual=1024\n"
    assert hmp(m, "info virtio") == "/machine/peripheral/balloon0/virtio-backend [virtio-balloon]\n"
    assert hmp(m, "qom-list balloon0") == PCI_LIST
    assert hmp(m, "qom-list /machine/peripheral/balloon0/virtio-backend") == BACKEND_LIST
    assert hmp(m, "qom-get balloon0 guest-stats-polling-interval") == "0\n"
    stats = hmp(m, "qom-get balloon0 guest-stats")
    assert stats.startswith('{\n    "stats": {\n        "stat-htlb-pgalloc": 0,\n'
                            '        "stat-swap-out": 0,\n        "stat-available-memory": ')
    parsed = json.loads(stats)
    assert list(parsed) == ["stats", "last-update"] and parsed["last-update"] > 0
    assert list(parsed["stats"]) == [
        "stat-htlb-pgalloc", "stat-swap-out", "stat-available-memory", "stat-htlb-pgfail",
        "stat-free-memory", "stat-minor-faults", "stat-major-faults", "stat-total-memory",
        "stat-swap-in", "stat-disk-caches"]
    assert 0 < parsed["stats"]["stat-free-memory"] <= parsed["stats"]["stat-total-memory"]
    for prop in ("deflate-on-oom", "free-page-reporting", "free-page-hint"):
        assert hmp(m, f"qom-get /machine/peripheral/balloon0/virtio-backend {prop}") \
            == "false\n"
    via_qmp = qmp(m, "qom-get", {"path": "/machine/peripheral/balloon0",
                                 "property": "guest-stats"}, "c38")
    assert via_qmp == {"return": parsed, "id": "c38"}


def test_11b_balloon_512_then_2048_clamps_to_ram_then_qmp_768(build: Builder) -> None:
    m = build(BALLOON)
    assert hmp(m, "balloon 512") == ""
    reach(m, 512)
    assert hmp(m, "balloon 2048") == ""  # more than the 1024 MiB of RAM: no error, clamped
    reach(m, 1024)
    assert qmp(m, "query-balloon", ident="c22") == {"return": {"actual": 1073741824},
                                                    "id": "c22"}
    assert qmp(m, "balloon", {"value": 805306368}, "c23") == {"return": {}, "id": "c23"}
    reach(m, 768)
    assert qmp(m, "query-balloon", ident="c29") == {"return": {"actual": 805306368},
                                                    "id": "c29"}


HMP_ERRORS = [
    ("balloon 0", "Error: Parameter 'target' expects a size\n"),
    ("balloon -1", 'enter a positive value\nTry "help balloon" for more information\n'),
    ("balloon -512", 'enter a positive value\nTry "help balloon" for more information\n'),
    ("balloon abc",
     'invalid char \'a\' in expression\nTry "help balloon" for more information\n'),
    ("balloon", 'unexpected end of expression\nTry "help balloon" for more information\n'),
    ("balloon 1G", 'balloon: extraneous characters at the end of line\n'
                   'Try "help balloon" for more information\n'),
    ("balloon 600.5", 'balloon: extraneous characters at the end of line\n'
                      'Try "help balloon" for more information\n'),
    ("balloon 700k", 'balloon: extraneous characters at the end of line\n'
                     'Try "help balloon" for more information\n'),
]
QMP_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"value": 0}, "c30", "Parameter 'target' expects a size"),
    ({"value": -1}, "c31", "Parameter 'target' expects a size"),
    ({"value": "512M"}, "c32", "Invalid parameter type for 'value', expected: integer"),
    ({"value": 1.5}, "c33", "Invalid parameter type for 'value', expected: integer"),
    ({}, "c34", "Parameter 'value' is missing"),
]


def test_11b_bad_balloon_arguments_change_nothing(build: Builder) -> None:
    m = build(BALLOON)
    assert qmp(m, "balloon", {"value": 805306368}) == {"return": {}, "id": "c1"}
    reach(m, 768)
    for line, out in HMP_ERRORS:
        assert hmp(m, line) == out, line
    assert hmp(m, "info balloon") == "balloon: actual=768\n"
    for args, ident, desc in QMP_ERRORS:
        assert qmp(m, "balloon", args, ident) == {
            "id": ident, "error": {"class": "GenericError", "desc": desc}}
    assert hmp(m, "balloon 768") == ""
    assert hmp(m, "info balloon") == "balloon: actual=768\n"


QOM_SET_ERRORS = [
    ("qom-set balloon0 guest-stats-polling-interval -1",
     "Error: timer value must be greater than zero\n"),
    ("qom-set balloon0 guest-stats-polling-interval 5000000000",
     "Error: timer value is too big\n"),
    ("qom-set balloon0 guest-stats-polling-interval abc",
     "Error: Parameter 'guest-stats-polling-interval' expects int64\n"),
    ("qom-set balloon0 guest-stats 1",
     "Error: Property 'virtio-balloon-device.guest-stats' is not writable\n"),
]


def test_11b_guest_stats_polling(build: Builder) -> None:
    m = build(BALLOON)
    first = json.loads(hmp(m, "qom-get balloon0 guest-stats"))["last-update"]
    for line, out in QOM_SET_ERRORS:
        assert hmp(m, line) == out, line
    assert hmp(m, "qom-get balloon0 guest-stats-polling-interval") == "0\n"
    assert hmp(m, "qom-set balloon0 guest-stats-polling-interval 2") == ""
    assert hmp(m, "qom-get balloon0 guest-stats-polling-interval") == "2\n"
    assert m.wait_until(lambda m: json.loads(hmp(m, "qom-get balloon0 guest-stats"))
                        ["last-update"] > first, 5)
    assert hmp(m, "qom-set balloon0 guest-stats-polling-interval 0") == ""
    bad = qmp(m, "qom-set", {"path": "balloon0", "property": "guest-stats-polling-interval",
                             "value": "2"})
    assert bad["error"] == {"class": "GenericError", "desc": "Invalid parameter type for "
                            "'guest-stats-polling-interval', expected: integer"}


def test_11b_system_reset_keeps_the_target_and_the_new_driver_inflates_again(
        build: Builder) -> None:
    m = build(BALLOON)
    assert qmp(m, "balloon", {"value": 805306368}) == {"return": {}, "id": "c1"}
    reach(m, 768)
    # the guest reboots in milliseconds here (seconds in the transcript): vmemlab's "pause
    # after reset" holds the machine right after the reset, before the new driver runs
    control_for(m).set_pace(pause_after_reset=True)
    assert hmp(m, "system_reset") == ""
    assert m.wait_until(lambda m: m.runstate == "paused", 10)
    assert hmp(m, "info balloon") == "balloon: actual=768\n"  # stale until the new driver
    assert qmp(m, "query-balloon", ident="c41") == {"return": {"actual": 805306368},
                                                    "id": "c41"}
    assert hmp(m, "cont") == ""
    reach(m, 768)
    assert m.wait_until(lambda m: m.balloon is not None and m.balloon.actual == 65536
                        and m.guest_states.get("balloon0") == "idle", 10)


def test_11b_stop_reset_prelaunch_target_stored_then_applied_after_cont(
        build: Builder) -> None:
    m = build(BALLOON)
    assert hmp(m, "balloon 768") == ""
    reach(m, 768)
    assert hmp(m, "stop") == ""
    assert hmp(m, "system_reset") == ""
    assert hmp(m, "info status") == "VM status: paused (prelaunch)\n"
    assert hmp(m, "info balloon") == "balloon: actual=768\n"
    assert hmp(m, "balloon 900") == ""
    assert hmp(m, "info balloon") == "balloon: actual=768\n"
    assert hmp(m, "cont") == ""
    reach(m, 900)


# ---------------------------------------------------------------------------- 11c


def test_11c_deflate_on_oom_and_free_page_reporting_properties(build: Builder) -> None:
    m = build(BALLOON_OOM)
    assert hmp(m, "info balloon") == "balloon: actual=1024\n"
    for prop in ("deflate-on-oom", "free-page-reporting"):
        assert hmp(m, f"qom-get /machine/peripheral/balloon0/virtio-backend {prop}") \
            == "true\n"
    assert any("Free page reporting enabled" in line for line in m.console)


@pytest.mark.parametrize(("argv", "error"), [
    (["-device", "virtio-balloon-pci,id=b0", "-device", "virtio-balloon-pci,id=b1"],
     "vmemlab: -device virtio-balloon-pci,id=b1: Only one balloon device is supported"),
    (["-device", "virtio-balloon-pci,id=b0,nosuch=1"],
     "vmemlab: -device virtio-balloon-pci,id=b0,nosuch=1: "
     "Property 'virtio-balloon-pci.nosuch' not found"),
    (["-device", "virtio-balloon-pci,deflate-on-oom=maybe"],
     "vmemlab: -device virtio-balloon-pci,deflate-on-oom=maybe: "
     "Parameter 'deflate-on-oom' expects 'on' or 'off'"),
    (["-device", "virtio-balloon-pci,free-page-hint=on"],
     "vmemlab: -device virtio-balloon-pci,free-page-hint=on: "
     "'free-page-hint' requires 'iothread' to be set"),
])
def test_device_option_errors(argv: list[str], error: str) -> None:
    from monitor.cmdline import CmdlineError, parse_args

    with pytest.raises(CmdlineError) as err:
        parse_args(["-m", "1G", *argv])
    assert str(err.value) == error


def test_device_options_reach_the_machine() -> None:
    from monitor.cmdline import parse_args

    cfg = parse_args(["-m", "1G", "-device", "virtio-balloon-pci,id=bal,deflate-on-oom=on,"
                      "free-page-reporting=on,page-poison=off,guest-stats-polling-interval=3"]
                     ).config
    assert cfg.balloon is not None
    assert (cfg.balloon.id, cfg.balloon.deflate_on_oom, cfg.balloon.free_page_reporting,
            cfg.balloon.page_poison, cfg.balloon.stats_polling_interval) == (
        "bal", True, True, False, 3)


def test_balloon_change_is_throttled_to_one_a_second(build: Builder) -> None:
    m = build(BALLOON)
    got: list[tuple[float, dict[str, Any]]] = []
    remove = context_for(m).events.add_sink(lambda msg: got.append((time.monotonic(), msg)))
    try:
        t0 = time.monotonic()
        assert hmp(m, "balloon 512") == ""
        reach(m, 512)
        assert m.wait_until(lambda _m: bool(got) and got[-1][1]["data"]["actual"] == 536870912,
                            5)
        changes = [(t - t0, msg) for t, msg in got if msg["event"] == "BALLOON_CHANGE"]
        # the first comes at once and shows the first 1 MiB step (the transcript's)
        assert changes[0][1]["data"] == {"actual": 1072693248} and changes[0][0] < 0.5
        assert list(changes[0][1]) == ["timestamp", "event", "data"]
        for (ta, _a), (tb, _b) in itertools.pairwise(changes):
            assert tb - ta > 0.8  # then one a second with the latest value
        assert changes[-1][1]["data"] == {"actual": 536870912}
    finally:
        remove()
