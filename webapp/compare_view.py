"""What the /compare page shows of one mechanism: its grid, status and a short text.

Grids are rows of cells, one byte each (``CELLS``), drawn on a canvas by
static/compare_grid.js: virtio-mem's device blocks; a pc-dimm machine's slots, one row per
slot, in 2 MiB blocks with the zone the guest onlined them to; the balloon models' RAM in
2 MiB chunks, by how much of each the guest gave back. Every cell comes from the machine:
the device's bitmap, the guest's own view, the host's record of given-back pages.
"""

from __future__ import annotations

from typing import Any

from control import MachineControl
from control.mechanisms import Mechanism
from control.sizes import format_mib
from webapp.block_states import STATES, BlockState

#: the lab's cells by short key: codes of the one block-state table (webapp/block_states.py)
CELLS = {"empty": BlockState.LAB_EMPTY, "movable": BlockState.LAB_MOVABLE,
         "normal": BlockState.LAB_NORMAL, "returned": BlockState.LAB_RETURNED,
         "partly": BlockState.LAB_PARTLY, "pinned": BlockState.LAB_PINNED,
         "offline": BlockState.LAB_OFFLINE, "in-use": BlockState.LAB_IN_USE}
LEGEND = [(key, STATES[CELLS[key]].label) for key in
          ("movable", "normal", "pinned", "offline", "in-use", "partly", "returned", "empty")]
CHUNK = 2 << 20

#: what each mechanism is, and for the models which RFC paragraph they reproduce
NOTES: dict[str, str] = {
    "virtio-mem": "QEMU 7.2's virtio-mem-pci and Linux 6.1's virtio_mem driver: the device "
                  "plugs and unplugs 2 MiB blocks of its own region; unplugged memory cannot "
                  "be written; after a reboot everything is unplugged and the guest plugs "
                  "what is requested.",
    "dimm": "QEMU 7.2's pc-dimm over ACPI and Linux 6.1's acpi_memhotplug: memory comes and "
            "goes a whole DIMM at a time; every memory block of it must be offlined first; "
            "DIMMs stay plugged across a reboot. The RFC's Q&A: \"What's the problem with "
            "ordinary memory hot(un)plug?\"",
    "virtio-balloon": "QEMU 7.2's virtio-balloon and Linux 6.1's virtio_balloon: the guest "
                      "hands 4 KiB pages of its RAM to the host; nothing stops it from "
                      "using them again. The RFC's Q&A: \"How does this compare to "
                      "virtio-balloon?\"",
    "xen": "A behaviour model, not Xen: the RFC's Q&A \"How does this compare to XEN "
           "balloon?\" -- \"on a reboot, the guest will 'see' more memory than it actually "
           "has ... If the XEN guest driver doesn't come up, the guest will get killed once "
           "it touches too much memory.\" Modelled: RAM seen = maxmem, only the target "
           "populated, a balloon that gives pages back, death on touching the rest. Not "
           "modelled: Xen's hypercalls, PoD, grant tables, migration.",
    "hyperv": "A behaviour model, not Hyper-V: the RFC's Q&A \"How does this compare to "
              "Hyper-V balloon?\" -- \"memory will remain plugged on a reboot. Therefore, the "
              "guest will see more memory than the hypervisor actually wants to assign to "
              "it\". Modelled: hot-add in 128 MiB units (here pc-dimms over ACPI) that stays "
              "across reboots, shrinking only by a balloon the guest may ignore. Not "
              "modelled: the VMBus Dynamic Memory protocol, hot-remove, migration.",
}


def _zone_cell(zone: str, pinned: bool) -> int:
    if pinned:
        return CELLS["pinned"]
    return {"Movable": CELLS["movable"], "Normal": CELLS["normal"],
            "offline": CELLS["offline"]}.get(zone, CELLS["in-use"])


def _virtio_mem(control: MachineControl) -> list[dict[str, Any]]:
    snap = control.snapshot()
    if not snap.devices:
        return []
    dev = snap.devices[0]
    view = snap.guest
    gdev = view.devices[0] if view and view.devices else None
    cells = bytearray()
    for b, plugged in enumerate(dev.bitmap):
        if not plugged:
            cells.append(CELLS["returned"])
            continue
        zone = gdev.zones[b] if gdev and b < len(gdev.zones) else ""
        pinned = bool(gdev and b < len(gdev.usage) and gdev.usage[b][1] - gdev.kernel[b] > 0)
        cells.append(_zone_cell(zone, pinned))
    return [{"label": f"{dev.id} ({format_mib(dev.block_size)} blocks)", "cells": cells.hex()}]


def _dimms(control: MachineControl) -> list[dict[str, Any]]:
    snap = control.snapshot()
    machine = control.machine
    view = snap.guest
    by_slot = {d.slot: d for d in snap.dimms}
    started = {d.slot: d for d in machine.layout.dimms}
    rows = []
    for slot in range(snap.slots):
        dimm = by_slot.get(slot)
        if dimm is None:
            was = started.get(slot)
            width = (was.size if was else 0) // CHUNK
            kind = "returned" if was else "empty"
            label = (f"slot {slot}: {was.id} unplugged" if was else f"slot {slot}: empty")
            rows.append({"label": label, "cells": bytes([CELLS[kind]] * max(width, 1)).hex()})
            continue
        g = view.dimm(slot) if view else None
        cells = bytearray()
        for b in range(dimm.size // CHUNK):
            zone = g.zones[b] if g and b < len(g.zones) else ""
            pinned = bool(g and b < len(g.usage) and g.usage[b][1] - g.kernel[b] > 0)
            cells.append(_zone_cell(zone, pinned))
        state = f", {g.state}" if g and g.state != "added" else ""
        rows.append({"label": f"slot {slot}: {dimm.id} ({format_mib(dimm.size)}{state})",
                     "cells": cells.hex()})
    return rows


def _models(control: MachineControl) -> list[dict[str, Any]]:
    code = {0: CELLS["in-use"], 1: CELLS["partly"], 2: CELLS["returned"]}
    rows = []
    for name, addr, codes in control.models.given_map(CHUNK):
        label = "RAM" if name == "ram" else name
        rows.append({"label": f"{label} at 0x{addr:x} (2 MiB chunks)",
                     "cells": bytes(code[c] for c in codes).hex()})
    return rows


def _balloon(control: MachineControl) -> list[dict[str, Any]]:
    info = getattr(control, "balloon").query()  # noqa: B009  (the balloon branch)
    total = max(1, info.ram_size // CHUNK)
    given = min(total, info.balloon_pages * 4096 // CHUNK)
    cells = bytes([CELLS["in-use"]] * (total - given) + [CELLS["returned"]] * given)
    return [{"label": "share of RAM in the balloon (the host does not know which pages)",
             "cells": cells.hex()}]


GRIDS = {"virtio-mem": _virtio_mem, "dimm": _dimms, "xen": _models, "hyperv": _models,
         "virtio-balloon": _balloon}


def column(mech: Mechanism, control: MachineControl) -> dict[str, Any]:
    """One mechanism's column of the page: what it is, its grid and its numbers now."""
    machine = control.machine
    try:
        rows = GRIDS[mech.name](control)
        assigned = mech.assigned(control)
    except Exception:  # a machine that is rebooting or closed: nothing to draw this time
        rows, assigned = [], 0
    return {
        "name": mech.name, "title": mech.title, "kind": mech.kind,
        "note": NOTES.get(mech.name, ""), "runstate": str(machine.runstate),
        "assigned": assigned,
        "assigned_text": f"{format_mib(assigned)} besides boot RAM"
        if mech.kind == "shipped" else f"host backs {format_mib(assigned)}",
        "cmdline": machine.config.cmdline, "grid": rows,
        "legend": [{"key": k, "code": CELLS[k], "text": t} for k, t in LEGEND],
    }
