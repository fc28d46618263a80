"""The teaching pace in the monitor (vmemlab's commands, not QEMU's).

HMP ``pace [MS|step] [pause-after-reset=on|off]`` and QMP ``x-vmemlab-pace`` /
``x-vmemlab-step-request``. Shipped QEMU has no such control: a real device answers a
virtio-mem request at once. The semantics are ``MachineControl.set_pace``.
"""

from __future__ import annotations

from typing import Any

from control.machine_control import Pace
from emulator.pacing import MAX_PACE_MS
from monitor.commands import MonitorContext, MonitorError, controlled

_SWITCH = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}


def fmt(pace: Pace) -> str:
    """What ``pace`` prints: the settings, then each request held in flight."""
    speed = "full speed" if not pace.pace_ms else f"{pace.pace_ms} ms per request"
    lines = [f"teaching pace (vmemlab, not QEMU): {speed}",
             f"  pause after reset: {'on' if pace.pause_after_reset else 'off'}",
             f"  stepping: {'until the next answer' if pace.stepping else 'no'}",
             f"  answered after a hold: {pace.answered}"]
    for held in pace.held:
        lines.append(f"  in flight: {held.device} {held.type} 0x{held.addr:x} "
                     f"x{held.nb_blocks}")
    return "\n".join(lines) + "\n"


def _pace_ms(word: str) -> int:
    try:
        value = int(word, 0)
    except ValueError:
        raise MonitorError(f"pace: '{word}' is not a number of milliseconds "
                           f"(0 to {MAX_PACE_MS}, 0: full speed) or 'step'") from None
    return value


def _switch(word: str) -> bool:
    name, _, value = word.partition("=")
    if name != "pause-after-reset" or value.lower() not in _SWITCH:
        raise MonitorError(f"pace: unknown option '{word}' "
                           "(expected pause-after-reset=on|off)")
    return _SWITCH[value.lower()]


def hmp_pace(ctx: MonitorContext, a: dict[str, Any]) -> str:
    """``pace`` shows; ``pace MS`` sets; ``pace step`` runs to the next answered request."""
    words = (a.get("args") or "").split()
    if not words:
        return fmt(controlled(ctx.control.pace))
    if len(words) > 2:
        raise MonitorError("pace: too many arguments")
    if words[0] == "step":
        if len(words) > 1:
            raise MonitorError("pace: 'step' takes no argument")
        controlled(ctx.control.step_request)
        return ""
    pause: bool | None = None
    if words[0].startswith("pause-after-reset"):
        pace_ms: int | None = None
        pause = _switch(words[0])
        if len(words) > 1:
            raise MonitorError("pace: too many arguments")
    else:
        pace_ms = _pace_ms(words[0])
        if len(words) > 1:
            pause = _switch(words[1])
    controlled(lambda: ctx.control.set_pace(pace_ms, pause_after_reset=pause))
    return ""


def qmp_pace(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    """``x-vmemlab-pace``: set whichever of ``pace-ms`` and ``pause-after-reset`` is given;
    answers the settings and the requests in flight."""
    pace_ms = a.get("pace-ms")
    if pace_ms is not None and (isinstance(pace_ms, bool) or not isinstance(pace_ms, int)):
        raise MonitorError("Parameter 'pace-ms' expects uint32")
    pause = a.get("pause-after-reset")
    if pause is not None and not isinstance(pause, bool):
        raise MonitorError("Parameter 'pause-after-reset' expects boolean")
    pace = controlled(lambda: ctx.control.set_pace(pace_ms, pause_after_reset=pause))
    return {"pace-ms": pace.pace_ms, "pause-after-reset": pace.pause_after_reset,
            "stepping": pace.stepping, "answered": pace.answered,
            "in-flight": [{"device": h.device, "type": h.type, "addr": h.addr,
                           "nb-blocks": h.nb_blocks} for h in pace.held]}


def qmp_step_request(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    controlled(ctx.control.step_request)
    return {}


QMP: dict[str, tuple[dict[str, tuple[str, bool]], Any]] = {
    "x-vmemlab-pace": ({"pace-ms": ("int", False), "pause-after-reset": ("bool", False)},
                       qmp_pace),
    "x-vmemlab-step-request": ({}, qmp_step_request),
}
