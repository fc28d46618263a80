"""QEMU's event throttle and the machine-event -> QMP-event translation."""

from __future__ import annotations

import threading
import time
from typing import Any

from device.events import ConfigChange
from emulator import Machine
from emulator.events import Record, Reset, RunStateChange
from monitor.commands import context_for
from monitor.qmp_events import EventTranslator, RateLimiter, make_event, timestamp

from .conftest import wait_settled


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, msg: dict[str, Any]) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg))


def ev(size: int, wall: float) -> dict[str, Any]:
    return make_event("MEMORY_DEVICE_SIZE_CHANGE",
                      {"size": size, "qom-path": "/machine/peripheral/vm0", "id": "vm0"}, wall)


def test_throttle_semantics() -> None:
    sink = Sink()
    limiter = RateLimiter(sink, period=0.3)
    t0 = time.monotonic()
    limiter.submit("a", ev(1, 100.0))  # first: at once
    limiter.submit("a", ev(2, 100.1))  # merged ...
    limiter.submit("a", ev(3, 100.2))  # ... into the last one
    limiter.submit("b", ev(9, 100.3))  # another key is independent
    assert [m["data"]["size"] for _, m in sink.got] == [1, 9]
    time.sleep(0.45)
    got = [(t - t0, m) for t, m in sink.got]
    assert [m["data"]["size"] for _, m in got] == [1, 9, 3]
    assert 0.25 < got[2][0] < 0.45  # about one period after the first
    assert got[2][1]["timestamp"] == timestamp(100.2)  # the timestamp of the last change
    time.sleep(0.4)  # a quiet period ends the throttle: the next change goes out at once
    limiter.submit("a", ev(4, 101.0))
    assert sink.got[-1][1]["data"]["size"] == 4
    limiter.submit("a", ev(5, 101.1))
    limiter.flush()
    assert sink.got[-1][1]["data"]["size"] == 5
    limiter.close()


def test_timestamp_object() -> None:
    assert timestamp(1795981925.126529) == {"seconds": 1795981925, "microseconds": 126529}
    assert list(make_event("STOP", None, 1.5)) == ["timestamp", "event"]


def _record(event: Any) -> Record:
    return Record(1, 0, 1795981925.5, event)


def test_translation(machine: Machine) -> None:
    tr = EventTranslator(machine)
    try:
        assert tr.translate(_record(ConfigChange("vm0", {"plugged_size": 4 << 20}, False))) == [
            ("MEMORY_DEVICE_SIZE_CHANGE",
             {"size": 4 << 20, "qom-path": "/machine/peripheral/vm0", "id": "vm0"})]
        assert tr.translate(_record(ConfigChange("vm0", {"requested_size": 0}, True))) == []
        assert tr.translate(_record(Reset(True, "guest-reset", ""))) == [
            ("RESET", {"guest": True, "reason": "guest-reset"})]
        assert tr.translate(_record(RunStateChange("paused", "stop"))) == [("STOP", None)]
        assert tr.translate(_record(RunStateChange("running", "cont"))) == [("RESUME", None)]
        assert tr.translate(_record(RunStateChange("postmigrate"))) == [("STOP", None)]
        assert tr.translate(_record(RunStateChange("shutdown", "guest-shutdown"))) == [
            ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})]
    finally:
        tr.close()


def test_live_events_from_the_machine(machine: Machine) -> None:
    ctx = context_for(machine)
    sink = Sink()
    remove = ctx.events.add_sink(sink)
    time.sleep(1.1)
    machine.set_requested_size("vm0", 1 << 30)
    wait_settled(machine)
    time.sleep(1.2)
    sizes = [m["data"]["size"] for _, m in sink.got if m["event"] == "MEMORY_DEVICE_SIZE_CHANGE"]
    assert sizes[-1] == 1 << 30 and len(sizes) <= 3  # the last value is never lost
    from monitor import run_hmp
    from monitor.commands import quit_machine

    assert run_hmp(machine, "guest reboot") == ""
    assert machine.wait_until(lambda m: any(
        msg["event"] == "RESET" for _, msg in sink.got), 10)
    reset = next(msg for _, msg in sink.got if msg["event"] == "RESET")
    assert reset["data"] == {"guest": True, "reason": "guest-reset"}
    wait_settled(machine)

    ctx.quit_handler = lambda: None
    quit_machine(ctx)
    assert sink.got[-1][1]["event"] == "SHUTDOWN"
    assert sink.got[-1][1]["data"] == {"guest": False, "reason": "host-qmp-quit"}
    remove()
