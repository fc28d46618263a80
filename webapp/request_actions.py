"""The page's side of the experimental guest -> host requests (docs/extensions.md): the
presenter answers the request the ``ask`` policy holds, or picks a policy. Untrusted payloads
are checked here (``inputs``); the work is ``control.guest_requests``'s."""

from __future__ import annotations

from typing import Any

from control import control_for
from emulator.config import MiB
from webapp import inputs
from webapp.inputs import InputError
from webapp.sessions import MachineSession

POLICIES = ("deny", "cap", "rate", "ask")
VERDICTS = ("grant", "deny")


def _devices(sess: MachineSession) -> tuple[Any, list[str]]:
    if sess.machine is None:
        raise InputError("this session has no machine")
    ctl = control_for(sess.machine)
    return ctl, ctl.requests.devices()


def answer(sess: MachineSession, data: Any) -> dict[str, Any]:
    """``{"device": "vm0", "answer": "grant"|"deny", "size"?: "16M"}``."""
    data = inputs.payload(data)
    ctl, ids = _devices(sess)
    dev = inputs.device_id(data.get("device"), ids)
    verdict = inputs.choice(data.get("answer"), "answer", VERDICTS)
    size = (inputs.size(data["size"], "size", default_unit=MiB)
            if data.get("size") not in (None, "") else None)
    return {"device": dev, **ctl.requests.answer(dev, verdict == "grant", size)}


def policy(sess: MachineSession, data: Any) -> dict[str, Any]:
    """``{"device": "vm0", "policy": "cap", "cap"?: "256M", "rate"?: .., "period"?: 10}``."""
    data = inputs.payload(data)
    ctl, ids = _devices(sess)
    dev = inputs.device_id(data.get("device"), ids)
    chosen = inputs.choice(data.get("policy"), "policy", POLICIES)
    cap = inputs.size(data["cap"], "cap", default_unit=MiB) if data.get("cap") else None
    rate = inputs.size(data["rate"], "rate", default_unit=MiB) if data.get("rate") else None
    period = (float(inputs.integer(data["period"], "period", 1, 86_400))
              if data.get("period") else None)
    return {"device": dev, **ctl.requests.set_policy(dev, chosen, cap=cap, rate=rate,
                                                     period=period)}


def pending(sess: MachineSession) -> dict[str, Any]:
    """The requests waiting for the presenter, one per device at most (the page asks after a
    keyframe: events drained into a keyframe never reach it as a batch)."""
    ctl, ids = _devices(sess)
    out = []
    for dev in ids:
        info = ctl.requests.info(dev)
        if info["pending"] is not None:
            out.append({"device": dev, "requested_size": sess.machine.devices[dev]
                        .requested_size if sess.machine else 0, **info["pending"]})
    return {"pending": out}
