"""The Xen / Hyper-V behaviour models in the monitor (vmemlab's commands, not QEMU's).

HMP ``mem-set SIZE`` (after Xen's ``xl mem-set``; Hyper-V's Dynamic Memory does the same from
its host) and ``info behaviour-model``; QMP ``x-mem-set`` and ``x-query-behaviour-model``.
The semantics are ``control.behaviour_models``.
"""

from __future__ import annotations

from typing import Any

from control.sizes import format_mib, parse_option_size
from monitor.commands import MonitorContext, MonitorError, controlled

NAMES = {"xen": "Xen", "hyperv": "Hyper-V"}


def mem_set(ctx: MonitorContext, size: int) -> None:
    controlled(lambda: ctx.control.models.set_target(size))


def query(ctx: MonitorContext) -> dict[str, Any]:
    return controlled(lambda: ctx.control.models.stats())


def fmt(info: dict[str, Any]) -> str:
    name = NAMES.get(info["model"], info["model"])
    return (f"{name} behaviour model (a model of the 2017 RFC's Q&A, not an emulation)\n"
            f"  target: {info['target']} ({format_mib(info['target'])})\n"
            f"  RAM the guest sees: {info['ram']} ({format_mib(info['ram'])})\n"
            f"  given back by the guest: {info['given']} ({format_mib(info['given'])})\n"
            f"  used although given back: {info['cheated']} ({format_mib(info['cheated'])})\n"
            f"  backed by the host: {info['populated']} ({format_mib(info['populated'])})\n")


def hmp_mem_set(ctx: MonitorContext, a: dict[str, Any]) -> str:
    try:
        size = parse_option_size("size", a["size"])
    except ValueError as err:
        raise MonitorError(str(err)) from None
    mem_set(ctx, size)
    return ""


def qmp_mem_set(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    size = a["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise MonitorError("Parameter 'size' expects uint64")
    mem_set(ctx, size)
    return {}


QMP: dict[str, tuple[dict[str, tuple[str, bool]], Any]] = {
    "x-mem-set": ({"size": ("int", True)}, qmp_mem_set),
    "x-query-behaviour-model": ({}, lambda ctx, a: query(ctx)),
}
