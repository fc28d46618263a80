"""What a user can do to their machine; shared by the Socket.IO events and the JSON API.

Each action validates an untrusted payload (``inputs``) into typed arguments and calls the
control layer (``control.MachineControl``), as HMP, QMP and the scenario player do. Results
are small JSON-ready dicts; failures raise ``InputError`` (a bad payload) or ``ControlError``
(QEMU's text where QEMU has one, and a kind ``webapp.errors`` turns into an HTTP status).
"""

from __future__ import annotations

import io
import json
import struct
from typing import IO, Any

from control import (
    Alloc,
    BalloonRogue,
    Dump,
    Free,
    GuestOp,
    MachineControl,
    Pressure,
    RogueWrite,
    RunState,
    Touch,
    Verify,
    control_for,
)
from control.boot_options import ADOPT, with_option
from control.machine_control import engine_call
from emulator.config import MiB
from emulator.machine import Machine
from emulator.pacing import MAX_PACE_MS
from webapp import admission, inputs, view_model
from webapp.inputs import InputError
from webapp.sessions import MachineSession, SessionManager

SAVE_MAGIC = b"VMEMLAB-WEB-SAVE\n"
GUEST_ACTIONS = ("alloc", "free", "touch", "verify", "dump", "rogue_write", "pressure",
                 "balloon_rogue")
BALLOON_ACTIONS = ("target", "query", "stats", "poll_interval")
MAX_ROGUE_PAGES = 1 << 20  # 4 GiB of balloon pages in one click is plenty
REBOOT_MODES = {"reset": None, "no-driver": False, "driver": True}  # mode -> with the driver?


def _machine(sess: MachineSession) -> Machine:
    if sess.machine is None:
        raise InputError("this session has no machine")
    return sess.machine


def _control(sess: MachineSession) -> MachineControl:
    return control_for(_machine(sess))


def _device_ids(sess: MachineSession) -> list[str]:
    return list(_machine(sess).devices)


def set_requested_size(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    dev_id = inputs.device_id(data.get("device"), _device_ids(sess))
    size = inputs.size(data.get("size"), "requested-size")
    _control(sess).resize(dev_id, size)
    return {"device": dev_id, "requested_size": size}


def guest_op(sess: MachineSession, data: dict[str, Any]) -> tuple[str, GuestOp]:
    """The page's guest action (``action`` + fields) as a typed guest operation."""
    action = inputs.choice(data.get("action"), "action", GUEST_ACTIONS)
    ids = _device_ids(sess)
    if action == "alloc":
        size = inputs.size(data.get("size", 64), "allocation size", default_unit=MiB)
        if size <= 0:
            raise InputError("allocation size: must be positive")
        target = data.get("target")
        if target in (None, "", "any"):
            target = None
        elif target != "boot":
            target = inputs.device_id(target, ids)
        return action, Alloc(size, unmovable=inputs.flag(data.get("unmovable"), "unmovable"),
                             target=target)
    if action in ("free", "touch", "verify"):
        alloc_id = inputs.integer(data.get("id", 0), "allocation id", 0, 1 << 31)
        if action == "free":
            return action, Free(alloc_id)
        return action, Touch(alloc_id) if action == "touch" else Verify(alloc_id)
    if action == "dump":
        device = data.get("device")
        return action, Dump(None if device in (None, "", "all") else
                            inputs.device_id(device, ids),
                            legacy=inputs.flag(data.get("legacy"), "legacy"))
    if action == "pressure":
        size = inputs.size(data.get("size", 64), "pressure size", default_unit=MiB)
        if size <= 0:
            raise InputError("pressure size: must be positive")
        return action, Pressure(size)
    if action == "balloon_rogue":
        pages = inputs.integer(data.get("pages", 256), "pages", 1, MAX_ROGUE_PAGES)
        return action, BalloonRogue(pages)
    dev_id = inputs.device_id(data.get("device", ids[0] if ids else None), ids)
    addr = inputs.integer(data.get("addr", 0), "address", 0, (1 << 48) - 1)
    return action, RogueWrite(addr, dev_id)


def guest_action(sess: MachineSession, data: Any, timeout: float) -> dict[str, Any]:
    action, op = guest_op(sess, inputs.payload(data))
    outcome = _control(sess).guest(op, timeout)
    return {"action": action, **outcome.values, "message": outcome.message}


def balloon(sess: MachineSession, data: Any) -> dict[str, Any]:
    """The balloon (``control.balloon``): ``target`` (the guest's size: MiB or "512M"),
    ``query``, ``stats`` (QEMU's guest-stats), ``poll_interval`` (seconds, 0: off).
    Deflating asks the server's memory budget first, like any growth the page allows."""
    data = inputs.payload(data)
    action = inputs.choice(data.get("action", "query"), "action", BALLOON_ACTIONS)
    ops = _control(sess).balloon
    if action == "target":
        ops.set_target(inputs.size(data.get("size"), "target", default_unit=MiB))
    elif action == "poll_interval":
        ops.set_poll_interval(inputs.integer(data.get("seconds", 0), "seconds", 0,
                                             0xFFFF_FFFF))
    elif action == "stats":
        return {"action": action, **ops.guest_stats()}
    return {"action": action, **ops.query().to_dict()}


def reboot(sess: MachineSession, data: Any) -> dict[str, Any]:
    """``reset`` keeps the guest's command line; ``no-driver``/``driver`` switch the driver
    (every other boot option stays)."""
    data = inputs.payload(data)
    mode = inputs.choice(data.get("mode", "reset"), "mode", tuple(REBOOT_MODES))
    cmdline = _control(sess).reboot(driver=REBOOT_MODES[mode])
    return {"mode": mode, "cmdline": cmdline}


def run_control(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    action = inputs.choice(data.get("action"), "action", ("pause", "resume", "step"))
    control = _control(sess)
    if action == "pause":
        control.pause()
    elif action == "resume":
        control.resume()
        sess.idle_paused = False
    else:
        count = inputs.integer(data.get("instructions", 1), "instructions", 1, 1_000_000)
        pc = control.step(count)
        return {"action": action, "runstate": control.machine.runstate, "pc": pc,
                "instructions": count}
    return {"action": action, "runstate": control.machine.runstate}


def speed(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    factor = data.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
            0 < factor <= 1.0):
        raise InputError("speed: expected a factor above 0 and at most 1")
    _control(sess).set_speed(float(factor))
    return {"factor": factor}


def pace(sess: MachineSession, data: Any) -> dict[str, Any]:
    """vmemlab's teaching pace (not QEMU's): ``pace_ms`` (0: full speed) and/or
    ``pause_after_reset``; ``step: true`` runs until the next request is answered."""
    data = inputs.payload(data)
    control = _control(sess)
    pace_ms = data.get("pace_ms")
    ms = None if pace_ms is None else inputs.integer(pace_ms, "pace", 0, MAX_PACE_MS)
    pause = data.get("pause_after_reset")
    after_reset = None if pause is None else inputs.flag(pause, "pause after reset")
    settings = control.set_pace(ms, pause_after_reset=after_reset)
    if inputs.flag(data.get("step"), "step"):
        control.step_request()
        sess.idle_paused = False
        settings = control.pace()
    return {**settings.to_dict(), "runstate": control.machine.runstate}


def hmp(sess: MachineSession, data: Any) -> dict[str, Any]:
    """One line in the page's monitor: only what an anonymous visitor may run (``VISITOR``).
    Growth is refused by the machine's admission (the server's memory budget), as for
    every other way the page lets memory grow."""
    from monitor.hmp import VISITOR, run_hmp

    data = inputs.payload(data)
    line = inputs.text(data.get("line"), "command", 1000).strip()
    if not line:
        return {"output": ""}
    return {"output": run_hmp(_machine(sess), line, VISITOR)}


def block_info(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    dev_id = inputs.device_id(data.get("device"), _device_ids(sess))
    snap = sess.snapshot or sess.take_snapshot()
    nb = snap.device(dev_id).nb_blocks
    block = inputs.integer(data.get("block"), "block", 0, max(nb - 1, 0))
    return view_model.block_info(snap, dev_id, block, sess.residency)


def status(sess: MachineSession) -> dict[str, Any]:
    """Cheap status from public attributes only (no snapshot: never interrupts the guest)."""
    machine = _machine(sess)
    balloon = machine.balloon
    return {
        "runstate": machine.runstate,
        "guest_booted": machine.guest_booted,
        "cmdline": machine.config.cmdline,
        "devices": [
            {"id": dev_id, "driver_state": machine.guest_states.get(dev_id, "absent"),
             "plugged_size": dev.plugged_size, "requested_size": dev.requested_size}
            for dev_id, dev in machine.devices.items()
        ],
        **({"balloon": {"id": balloon.id, "actual": balloon.guest_size,
                        "target": balloon.target_size,
                        "driver_state": machine.guest_states.get(balloon.id, "absent")}}
           if balloon is not None else {}),
    }


def machine_info(sess: MachineSession) -> dict[str, Any]:
    snap = sess.take_snapshot()
    view = view_model.machine_view(snap)
    out = view_model.encode_view(view)
    out["memory_devices"] = view_model.memory_devices(snap, sess.memdevs())
    return out


def new_machine(manager: SessionManager, token: str, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    if data.get("preset") == "default":
        cfg = manager.config_factory()
    else:
        cfg = inputs.machine_config(data, max_memory=manager.settings.max_machine_memory,
                                    max_blocks=manager.settings.max_blocks)
    engine_call(cfg.layout)  # QEMU's checks and texts before anything is built
    admission.replacing(token)
    manager.replace(token, cfg)
    return {"config": inputs.config_to_form(cfg)}


def toggle_rfc(manager: SessionManager, token: str, data: Any) -> dict[str, Any]:
    """The RFC's shrink-on-reboot is a machine option: start a new machine with it flipped.

    The RFC's guest kept the memory it found plugged after a reboot; a Linux-like driver
    would UNPLUG_ALL it at once, hiding the difference this toggle is there to show, so the
    new machine's guest boots with ``virtio_mem.adopt=1`` while the option is on.
    """
    data = inputs.payload(data)
    sess = manager.session(token)
    if sess.config is None:
        raise InputError("this session has no machine")
    form = inputs.config_to_form(sess.config)
    enabled = inputs.flag(data.get("enabled"), "enabled")
    form["rfc_shrink_on_reboot"] = enabled
    form["cmdline"] = with_option(str(form.get("cmdline") or ""), ADOPT, enabled)
    return new_machine(manager, token, form)


# ---------------------------------------------------------------- save / load

def save(sess: MachineSession) -> bytes:
    """The machine as a file: our header (its configuration) + the migration stream.

    Saving leaves the machine in ``postmigrate``, as QEMU's migrate does; the sandbox lets it
    run on right away, so saving is invisible to the user.
    """
    control = _control(sess)
    assert sess.config is not None
    was_running = control.machine.runstate is RunState.RUNNING
    stream = io.BytesIO()
    control.save(stream)
    if was_running:
        control.resume()
    header = json.dumps({"config": inputs.config_to_form(sess.config)}).encode()
    return SAVE_MAGIC + struct.pack("<I", len(header)) + header + stream.getvalue()


def load(manager: SessionManager, token: str, stream: IO[bytes]) -> dict[str, Any]:
    if stream.read(len(SAVE_MAGIC)) != SAVE_MAGIC:
        raise InputError("not a vmemlab state file")
    raw = stream.read(4)
    if len(raw) != 4:
        raise InputError("state file is truncated")
    (length,) = struct.unpack("<I", raw)
    if length > 1 << 20:
        raise InputError("state file header is too large")
    try:
        header = json.loads(stream.read(length))
    except ValueError:
        raise InputError("state file header is corrupt") from None
    cfg = inputs.machine_config(inputs.payload(inputs.payload(header).get("config")),
                                max_memory=manager.settings.max_machine_memory,
                                max_blocks=manager.settings.max_blocks)
    engine_call(cfg.layout)
    admission.replacing(token)
    manager.replace(token, cfg, load=stream)
    return {"config": inputs.config_to_form(cfg)}
