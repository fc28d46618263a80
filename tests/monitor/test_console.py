"""The stdio HMP console: prompt, history-free piped mode and tab completion."""

from __future__ import annotations

import io

from emulator import Machine
from monitor.commands import MonitorContext
from monitor.hmp import complete
from monitor.readline_console import Completer, run_console


def test_completion(ctx: MonitorContext) -> None:
    assert complete(ctx, "qom-") == ["qom-get", "qom-list", "qom-set"]
    assert complete(ctx, "info virtio-") == ["virtio-mem", "virtio-mem-autoscale",
                                            "virtio-mem-blocks",
                                            "virtio-mem-requests", "virtio-status"]
    assert complete(ctx, "info virtio-mem ") == ["vm0"]
    assert complete(ctx, "info virtio-status /m") == ["/machine/peripheral/vm0/virtio-backend"]
    assert complete(ctx, "qom-set v") == ["vm0"]
    assert complete(ctx, "qom-set /machine/peripheral/vm0/") == [
        "/machine/peripheral/vm0/virtio-backend"]
    assert complete(ctx, "qom-set -j vm0 req") == ["requested-size"]
    assert complete(ctx, "guest r") == ["read", "reboot", "rogue-write"]
    assert complete(ctx, "virtio-mem ") == ["vm0", "/machine/peripheral/vm0",
                                            "/machine/peripheral/vm0/virtio-backend"]
    assert "system_reset" in complete(ctx, "")
    completer = Completer(ctx)
    assert completer("sys", 0) == "system_reset " and completer("sys", 1) == "system_wakeup "
    assert completer("sys", 2) is None


def test_piped_console(machine: Machine, ctx: MonitorContext) -> None:
    out = io.StringIO()
    run_console(ctx, io.StringIO("info status\nstop\ninfo status\ncont\nquit\ninfo status\n"),
                out)
    assert out.getvalue() == (
        "QEMU 7.2.22 monitor - type 'help' for more information\n"
        "(qemu) VM status: running\n(qemu) (qemu) VM status: paused\n(qemu) (qemu) ")
    assert ctx.quitting
