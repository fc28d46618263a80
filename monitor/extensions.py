"""The monitor's side of vmemlab's experimental extensions (docs/extensions.md) and of S3.

* ``info virtio-mem-requests ID`` / ``x-query-virtio-mem-requests``: the guest -> host request
  queue's policy, the request waiting for the presenter, and the log. Not QEMU commands:
  the queue is an experiment (the 2017 RFC's addendum), so the QMP names carry QEMU's
  ``x-`` prefix for experimental interfaces, as does the event
  ``X_VIRTIO_MEM_GUEST_REQUEST``.
* ``x-virtio-mem-request-policy`` and ``x-virtio-mem-request-answer``: pick the policy,
  answer a held request.
* ``system_wakeup``: QEMU's, with QEMU's error text; the guest suspends itself
  (``guest suspend``).
* ``guest grow CHUNK [LIMIT] [--no-ask]`` and ``guest suspend``: the guest workloads.

Semantics live in ``control.guest_requests`` and ``control.suspend``; this module only
translates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control.sizes import format_mib, parse_option_size
from monitor.commands import MonitorError, controlled, resolve_device

if TYPE_CHECKING:
    from monitor.commands import MonitorContext

POLICIES = ("deny", "cap", "rate", "ask")


def _size(name: str, word: str) -> int:
    try:
        return parse_option_size(name, word)
    except ValueError as err:
        raise MonitorError(str(err)) from None


# ------------------------------------------------------------------------------ requests

def query_requests(ctx: MonitorContext, dev_id: str) -> dict[str, Any]:
    dev = resolve_device(ctx, dev_id)
    return controlled(lambda: ctx.control.requests.info(dev))


def set_policy(ctx: MonitorContext, dev_id: str, policy: str, cap: int | None = None,
               rate: int | None = None, period: float | None = None) -> dict[str, Any]:
    dev = resolve_device(ctx, dev_id)
    return controlled(lambda: ctx.control.requests.set_policy(dev, policy, cap=cap, rate=rate,
                                                              period=period))


def answer(ctx: MonitorContext, dev_id: str, grant: bool, size: int | None = None
           ) -> dict[str, Any]:
    dev = resolve_device(ctx, dev_id)
    return controlled(lambda: ctx.control.requests.answer(dev, grant, size))


def fmt_requests(info: dict[str, Any]) -> str:
    """``info virtio-mem-requests ID`` (vmemlab's layout: QEMU has no such command)."""
    lines = [f"virtio-mem {info['id']}: guest requests (vmemlab experiment, not in virtio)",
             f"  policy: {_policy_text(info)}"]
    pending = info["pending"]
    lines.append(f"  pending: #{pending['seq']} {pending['type']} {format_mib(pending['size'])}"
                 f" on node {pending['node']}: \"{pending['reason']}\" (waiting for the "
                 "presenter)" if pending else "  pending: none")
    if not info["requests"]:
        lines.append("  no requests yet")
    for r in info["requests"]:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"  #{r['seq']} {r['type']} {format_mib(r['size'])} node {r['node']} "
                     f"\"{r['reason']}\" -> {r['decision']} {format_mib(r['granted'])}"
                     f" [{r['policy']}]{note}")
    return "\n".join(lines) + "\n"


def _policy_text(info: dict[str, Any]) -> str:
    policy = info["policy"]
    if policy == "cap":
        return f"cap (grant while requested-size <= {format_mib(info['cap'])})"
    if policy == "rate":
        return f"rate (at most {format_mib(info['rate'])} per {info['period']:g} s)"
    if policy == "ask":
        return "ask (the presenter decides)"
    return "deny (the host alone decides, as shipped virtio-mem)"


def hmp_info_requests(ctx: MonitorContext, a: dict[str, Any]) -> str:
    return fmt_requests(query_requests(ctx, a["id"]))


def hmp_policy(ctx: MonitorContext, a: dict[str, Any]) -> str:
    """``x-virtio-mem-request-policy ID deny|ask|cap SIZE|rate SIZE [SECONDS]``."""
    words = (a.get("args") or "").split()
    policy = a["policy"]
    if policy not in POLICIES:
        raise MonitorError(f"Parameter 'policy' does not accept value '{policy}' "
                           f"({', '.join(POLICIES)})")
    cap = rate = None
    period: float | None = None
    if policy in ("cap", "rate"):
        if not words:
            raise MonitorError(f"usage: x-virtio-mem-request-policy ID {policy} SIZE"
                               + (" [SECONDS]" if policy == "rate" else ""))
        value = _size("size", words[0])
        cap, rate = (value, None) if policy == "cap" else (None, value)
        if policy == "rate" and len(words) > 1:
            try:
                period = float(words[1])
            except ValueError:
                raise MonitorError(f"invalid number '{words[1]}'") from None
    info = set_policy(ctx, a["id"], policy, cap, rate, period)
    return f"policy: {_policy_text(info)}\n"


def hmp_answer(ctx: MonitorContext, a: dict[str, Any]) -> str:
    """``x-virtio-mem-request-answer ID grant|deny [SIZE]``."""
    verdict = a["answer"]
    if verdict not in ("grant", "deny"):
        raise MonitorError(f"Parameter 'answer' does not accept value '{verdict}' (grant, deny)")
    size = _size("size", a["size"]) if a.get("size") else None
    r = answer(ctx, a["id"], verdict == "grant", size)
    return f"#{r['seq']} {r['type']} {format_mib(r['size'])}: {r['decision']} " \
           f"{format_mib(r['granted'])}\n"


# ------------------------------------------------------------------------------ workloads

def guest_grow(ctx: MonitorContext, args: list[str]) -> str:
    """``guest grow CHUNK [LIMIT] [--no-ask]``: allocate until an allocation fails."""
    ask = "--no-ask" not in args
    words = [w for w in args if w != "--no-ask"]
    if not words:
        raise MonitorError("usage: guest grow CHUNK [LIMIT] [--no-ask]")
    chunk = _size("size", words[0])
    limit = _size("size", words[1]) if len(words) > 1 else 0
    return controlled(lambda: ctx.control.requests.grow(chunk, limit, ask=ask)).message + "\n"


def guest_suspend(ctx: MonitorContext) -> str:
    """``guest suspend``: ``echo mem > /sys/power/state`` in the guest."""
    controlled(lambda: ctx.control.power.suspend())
    return ""


def system_wakeup(ctx: MonitorContext) -> None:
    controlled(lambda: ctx.control.power.wakeup())


GUEST_EXTENSIONS = ("grow", "suspend")


# ------------------------------------------------------------------------------ QMP

def _q_policy(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    period = a.get("period")
    if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float))):
        raise MonitorError("Invalid parameter type for 'period', expected: number")
    return set_policy(ctx, a["id"], a["policy"], a.get("cap"), a.get("rate"),
                      None if period is None else float(period))


def _q_answer(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    return answer(ctx, a["id"], a["grant"], a.get("size"))


def _q_wakeup(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    system_wakeup(ctx)
    return {}


QMP: dict[str, tuple[dict[str, tuple[str, bool]], Any]] = {
    "system_wakeup": ({}, _q_wakeup),
    "x-query-virtio-mem-requests": ({"id": ("str", True)},
                                    lambda ctx, a: query_requests(ctx, a["id"])),
    "x-virtio-mem-request-policy": ({"id": ("str", True), "policy": ("str", True),
                                     "cap": ("int", False), "rate": ("int", False),
                                     "period": ("any", False)}, _q_policy),
    "x-virtio-mem-request-answer": ({"id": ("str", True), "grant": ("bool", True),
                                     "size": ("int", False)}, _q_answer),
}


# ------------------------------------------------------------------------------ autoscaler

def autoscale(ctx: MonitorContext, dev_id: str, enable: bool, low: int = 0, high: int = 0,
              step: int = 0, interval: float | None = None) -> dict[str, Any]:
    from control.autoscaler import AutoscalePolicy

    dev = resolve_device(ctx, dev_id)
    if not enable:
        controlled(lambda: ctx.control.autoscale.disable(dev))
        return ctx.control.autoscale.info(dev)
    policy = AutoscalePolicy(low, high, step, interval=0.5 if interval is None else interval)
    controlled(lambda: ctx.control.autoscale.enable(dev, policy))
    return ctx.control.autoscale.info(dev)


def fmt_autoscale(info: dict[str, Any]) -> str:
    """``info virtio-mem-autoscale ID`` (vmemlab's: QEMU has no autoscaler)."""
    if not info["enabled"]:
        return f"virtio-mem {info['id']}: autoscaler off\n"
    lines = [f"virtio-mem {info['id']}: autoscaler on (vmemlab experiment): grow by "
             f"{format_mib(info['step'])} below {format_mib(info['low'])} free, shrink above "
             f"{format_mib(info['high'])} free, every {info['interval']:g} s"]
    lines += [f"  {d['action']} {format_mib(d['old'])} -> {format_mib(d['new'])}: {d['reason']}"
              f" ({d['source']})" for d in info["decisions"]]
    return "\n".join(lines) + "\n"


def hmp_autoscale(ctx: MonitorContext, a: dict[str, Any]) -> str:
    """``x-virtio-mem-autoscale ID on LOW HIGH STEP | off``."""
    words = (a.get("args") or "").split()
    if a["mode"] == "off":
        return fmt_autoscale(autoscale(ctx, a["id"], False))
    if a["mode"] != "on" or len(words) != 3:
        raise MonitorError("usage: x-virtio-mem-autoscale ID on LOW HIGH STEP | off")
    low, high, step = (_size(n, w) for n, w in zip(("low", "high", "step"), words, strict=True))
    return fmt_autoscale(autoscale(ctx, a["id"], True, low, high, step))


def hmp_info_autoscale(ctx: MonitorContext, a: dict[str, Any]) -> str:
    dev = resolve_device(ctx, a["id"])
    return fmt_autoscale(ctx.control.autoscale.info(dev))


def _q_autoscale(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    interval = a.get("interval")
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float))):
        raise MonitorError("Invalid parameter type for 'interval', expected: number")
    return autoscale(ctx, a["id"], a["enable"], a.get("low", 0), a.get("high", 0),
                     a.get("step", 0), None if interval is None else float(interval))


QMP.update({
    "x-virtio-mem-autoscale": ({"id": ("str", True), "enable": ("bool", True),
                                "low": ("int", False), "high": ("int", False),
                                "step": ("int", False), "interval": ("any", False)},
                               _q_autoscale),
    "x-query-virtio-mem-autoscale": ({"id": ("str", True)}, lambda ctx, a:
                                     ctx.control.autoscale.info(resolve_device(ctx, a["id"]))),
})
