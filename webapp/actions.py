"""What a user can do to their machine; shared by the Socket.IO events and the JSON API.

Each action takes the caller's session plus an untrusted payload, validates it (``inputs``)
and calls only the machine's public API. Results are small JSON-ready dicts; failures raise
``InputError`` or the engine's ``VmemError`` subclasses, whose texts (QEMU's, where QEMU has
one) the page shows.
"""

from __future__ import annotations

import io
import json
import struct
from concurrent.futures import TimeoutError as FutureTimeout
from typing import IO, Any

from emulator.config import DEFAULT_GUEST_CMDLINE, MiB
from emulator.workload import GuestError, Workload
from webapp import inputs, view_model
from webapp.inputs import InputError
from webapp.sessions import MachineSession, SessionManager

NO_DRIVER_CMDLINE = "modprobe.blacklist=virtio_mem"
SAVE_MAGIC = b"VMEMLAB-WEB-SAVE\n"
GUEST_ACTIONS = ("alloc", "free", "touch", "verify", "dump", "rogue_write")


def _machine(sess: MachineSession):  # type: ignore[no-untyped-def]
    if sess.machine is None:
        raise InputError("this session has no machine")
    return sess.machine


def _device_ids(sess: MachineSession) -> list[str]:
    return list(_machine(sess).devices)


def set_requested_size(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    machine = _machine(sess)
    dev_id = inputs.device_id(data.get("device"), _device_ids(sess))
    size = inputs.size(data.get("size"), "requested-size")
    machine.set_requested_size(dev_id, size)
    return {"device": dev_id, "requested_size": size}


def guest_action(sess: MachineSession, data: Any, timeout: float) -> dict[str, Any]:
    data = inputs.payload(data)
    machine = _machine(sess)
    action = inputs.choice(data.get("action"), "action", GUEST_ACTIONS)
    if machine.runstate != "running":
        raise InputError(f"the guest is not running ({machine.runstate}); resume it first")
    work = Workload(machine, timeout=timeout)
    ids = _device_ids(sess)
    try:
        if action == "alloc":
            size = inputs.size(data.get("size", 64), "allocation size", default_unit=MiB)
            if size <= 0:
                raise InputError("allocation size: must be positive")
            target = data.get("target")
            if target not in (None, "", "any", "boot"):
                target = inputs.device_id(target, ids)
            alloc = work.alloc(size, unmovable=inputs.flag(data.get("unmovable"), "unmovable"),
                               target=target or None)
            return {"action": action, "id": alloc.id, "pages": alloc.pages,
                    "unmovable": alloc.unmovable,
                    "message": f"allocation #{alloc.id}: {alloc.pages * 4 // 1024} MiB "
                               f"{'unmovable' if alloc.unmovable else 'movable'}"}
        if action in ("free", "touch", "verify"):
            alloc_id = inputs.integer(data.get("id", 0), "allocation id", 0, 1 << 31)
            if action == "free":
                pages = work.free(alloc_id)
                return {"action": action, "pages": pages,
                        "message": f"freed {pages * 4 // 1024} MiB"}
            if action == "touch":
                pages = work.touch(alloc_id)
                return {"action": action, "pages": pages, "message": f"touched {pages} pages"}
            bad, checked = work.verify(alloc_id)
            return {"action": action, "bad": bad, "checked": checked,
                    "message": f"verified {checked} pages: "
                               f"{'all good' if bad == 0 else f'{bad} BAD'}"}
        if action == "dump":
            device = data.get("device")
            device = None if device in (None, "", "all") else inputs.device_id(device, ids)
            read, nonzero = work.dump(device)
            return {"action": action, "bytes": read, "nonzero_pages": nonzero,
                    "message": f"dumped {read // MiB} MiB, {nonzero} non-zero pages"}
        dev_id = inputs.device_id(data.get("device", ids[0] if ids else None), ids)
        addr = inputs.integer(data.get("addr", 0), "address", 0, (1 << 48) - 1)
        result = work.rogue_write(addr, dev_id)
        blocked = result.status == -14
        return {"action": action, "status": result.status, "blocked": blocked,
                "message": "rogue write BLOCKED by the host (violation)" if blocked
                           else f"rogue write returned {result.status}"}
    except GuestError as exc:
        raise InputError(str(exc)) from None
    except (TimeoutError, FutureTimeout):
        raise InputError(f"the guest did not answer within {timeout:.0f} s") from None


def reboot(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    mode = inputs.choice(data.get("mode", "reset"), "mode", ("reset", "no-driver", "driver"))
    machine = _machine(sess)
    cmdline = {"reset": None, "no-driver": NO_DRIVER_CMDLINE, "driver": _with_driver(sess)}[mode]
    machine.system_reset(cmdline=cmdline)
    return {"mode": mode, "cmdline": machine.config.cmdline}


def _with_driver(sess: MachineSession) -> str:
    """The machine's own guest command line without the blacklist (or the default one)."""
    words = [w for w in (sess.config.cmdline if sess.config else "").split()
             if w != NO_DRIVER_CMDLINE]
    return " ".join(words) or DEFAULT_GUEST_CMDLINE


def run_control(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    action = inputs.choice(data.get("action"), "action", ("pause", "resume", "step"))
    machine = _machine(sess)
    if action == "pause":
        machine.pause()
    elif action == "resume":
        machine.resume()
        sess.idle_paused = False
    else:
        step = getattr(machine, "step", None)
        if step is None:
            raise InputError("single-step needs Machine.step(), which the engine lacks so far")
        count = inputs.integer(data.get("instructions", 1), "instructions", 1, 1_000_000)
        pc = step(count)
        return {"action": action, "runstate": machine.runstate, "pc": pc,
                "instructions": count}
    return {"action": action, "runstate": machine.runstate}


def speed(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    factor = data.get("factor")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
            0 < factor <= 1.0):
        raise InputError("speed: expected a factor above 0 and at most 1")
    set_speed = getattr(_machine(sess), "set_speed", None)
    if set_speed is None:
        raise InputError("speed control needs Machine.set_speed(), which the engine lacks so far")
    set_speed(float(factor))
    return {"factor": factor}


def hmp(sess: MachineSession, data: Any) -> dict[str, Any]:
    data = inputs.payload(data)
    line = inputs.text(data.get("line"), "command", 1000).strip()
    if not line:
        return {"output": ""}
    try:
        from monitor.hmp import run_hmp
    except ImportError:
        return {"output": "monitor not available"}
    return {"output": run_hmp(_machine(sess), line)}


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
    return {
        "runstate": machine.runstate,
        "guest_booted": machine.guest_booted,
        "cmdline": machine.config.cmdline,
        "devices": [
            {"id": dev_id, "driver_state": machine.guest_states.get(dev_id, "absent"),
             "plugged_size": dev.plugged_size, "requested_size": dev.requested_size}
            for dev_id, dev in machine.devices.items()
        ],
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
        cfg = inputs.machine_config(data, max_memory=manager.settings.max_memory,
                                    max_blocks=manager.settings.max_blocks)
    cfg.layout()  # QEMU's checks and texts (ConfigError) before anything is built
    manager.replace(token, cfg)
    return {"config": inputs.config_to_form(cfg)}


def toggle_rfc(manager: SessionManager, token: str, data: Any) -> dict[str, Any]:
    """The RFC's shrink-on-reboot is a machine option: start a new machine with it flipped."""
    data = inputs.payload(data)
    sess = manager.session(token)
    if sess.config is None:
        raise InputError("this session has no machine")
    form = inputs.config_to_form(sess.config)
    enabled = inputs.flag(data.get("enabled"), "enabled")
    form["rfc_shrink_on_reboot"] = enabled
    # the RFC's guest kept the memory it found plugged after a reboot; a Linux-like driver
    # would UNPLUG_ALL it at once, hiding the difference this toggle is there to show
    options = [o for o in str(form.get("cmdline") or "").split() if o != ADOPT]
    form["cmdline"] = " ".join([*options, ADOPT] if enabled else options)
    return new_machine(manager, token, form)


ADOPT = "virtio_mem.adopt=1"


# ---------------------------------------------------------------- save / load

def save(sess: MachineSession) -> bytes:
    """The machine as a file: our header (its configuration) + the migration stream.

    Saving leaves the machine in ``postmigrate``, as QEMU's migrate does; the sandbox lets it
    run on right away, so saving is invisible to the user.
    """
    machine = _machine(sess)
    assert sess.config is not None
    was_running = machine.runstate == "running"
    stream = io.BytesIO()
    machine.save(stream)
    if was_running:
        machine.resume()
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
                                max_memory=manager.settings.max_memory,
                                max_blocks=manager.settings.max_blocks)
    cfg.layout()
    manager.replace(token, cfg, load=stream)
    return {"config": inputs.config_to_form(cfg)}
