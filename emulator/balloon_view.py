"""Read what the guest's balloon driver exports (``struct abi_balloon_view`` in guest RAM).

The balloon's guest-side numbers -- pages in the balloon per memory area, MemTotal, what the
OOM notifier took back, what was reported, pages reused without telling the host -- are the
driver's own, read from its RAM. The address comes from the untrusted guest: it is checked
against boot RAM, and anything malformed gives ``None``, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator import abi
from emulator.backing import HostMemory


@dataclass(frozen=True)
class BalloonGuestView:
    state: str  # the driver's state (abi.DRIVER_STATES)
    features: int  # negotiated VIRTIO_BALLOON_F_* bits
    num_pages: int  # the host's target as the driver last read it
    actual: int  # pages in the balloon
    pages_boot: int  # of those, in boot RAM
    pages_dev: tuple[int, ...]  # ... in each virtio-mem device's memory (by slot)
    inflated: int
    deflated: int
    requests: int
    oom_deflated: int
    out_of_puff: int
    migrated: int
    reports: int
    reported_bytes: int
    rogue_pages: int
    stats_sent: int
    total_pages: int  # MemTotal in pages
    free_pages: int  # MemFree in pages


def read_balloon_view(ram: HostMemory, addr: int, nr_devices: int) -> BalloonGuestView | None:
    size = abi.BALLOON_VIEW.size
    if not addr or not ram.contains(addr, size):
        return None
    f = dict(zip(abi.BALLOON_VIEW_FIELDS,
                 abi.BALLOON_VIEW.unpack(ram.read(addr - ram.gpa, size)), strict=True))
    if f["magic"] != abi.BALLOON_VIEW_MAGIC:
        return None
    return BalloonGuestView(
        state=abi.DRIVER_STATES.get(f["state"], f"unknown({f['state']})"),
        features=f["features"], num_pages=f["num_pages"], actual=f["actual"],
        pages_boot=f["pages_boot"],
        pages_dev=tuple(f[f"pages_dev{i}"] for i in range(min(nr_devices, abi.MAX_DEVICES))),
        inflated=f["inflated"], deflated=f["deflated"], requests=f["requests"],
        oom_deflated=f["oom_deflated"], out_of_puff=f["out_of_puff"], migrated=f["migrated"],
        reports=f["reports"], reported_bytes=f["reported_bytes"],
        rogue_pages=f["rogue_pages"], stats_sent=f["stats_sent"],
        total_pages=f["total_pages"], free_pages=f["free_pages"],
    )
