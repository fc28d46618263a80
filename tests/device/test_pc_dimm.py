"""pc-dimm placement and QEMU's checks, in QEMU's order (device/pc_dimm.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.errors import ConfigError
from device.memory_backend import MemoryBackends
from device.pc_dimm import DIMM_ALIGN, DeviceMemory, DimmRequest, free_address, plan_dimm

GiB = 1 << 30
MiB = 1 << 20
AREA = DeviceMemory(base=4 * GiB, size=7 * GiB, slots=4, nr_nodes=0)


def backends(**sizes: int) -> MemoryBackends:
    b = MemoryBackends()
    for name, size in sizes.items():
        b.add(name, size)
    return b


def test_first_dimm_goes_to_the_start_of_the_area() -> None:
    dimm = plan_dimm(DimmRequest("dimm1", "d1"), AREA, backends(d1=GiB), [])
    assert (dimm.addr, dimm.slot, dimm.size, dimm.hotplugged) == (4 * GiB, 0, GiB, True)
    assert dimm.path == "/machine/peripheral/dimm1"


def test_next_dimm_goes_after_what_is_there() -> None:
    area = DeviceMemory(4 * GiB, 7 * GiB, 4, 0, (("dimm1", 4 * GiB, GiB),), (0,))
    dimm = plan_dimm(DimmRequest("dimm2", "d2"), area, backends(d2=256 * MiB), ["dimm1"])
    assert (dimm.addr, dimm.slot) == (5 * GiB, 1)


@pytest.mark.parametrize(("req", "area", "message"), [
    (DimmRequest("x", "d1"), DeviceMemory(4 * GiB, 7 * GiB, 0, 0),
     "no slots where allocated, please specify the 'slots' option"),
    (DimmRequest("x", "d1", slot=4), AREA, "invalid slot number 4, valid range is [0-3]"),
    (DimmRequest("x", "d1", slot=1), DeviceMemory(4 * GiB, 7 * GiB, 4, 0, (), (1,)),
     "slot 1 is busy"),
    (DimmRequest("x", "d1"), DeviceMemory(4 * GiB, 7 * GiB, 1, 0, (), (0,)),
     "no free slots available"),
    (DimmRequest("x"), AREA, "'memdev' property must be set"),
    (DimmRequest("x", "nope"), AREA, "Device 'nope' not found"),
    (DimmRequest("x", "big"), AREA,
     "not enough space, currently 0x0 in use of total space for memory devices 0x1c0000000"),
    (DimmRequest("x", "d1", addr=0x100000), AREA, "address must be aligned to 0x200000 bytes"),
    (DimmRequest("x", "odd"), AREA, "backend memory size must be multiple of 0x200000"),
    (DimmRequest("x", "d1", addr=2 * GiB), AREA,
     "can't add memory device [0x80000000:0x40000000], usable range for memory devices "
     "[0x100000000:0x1c0000000]"),
    (DimmRequest("x", "d1", node=1), AREA,
     "'DIMM property node has value 1' which exceeds the number of numa nodes: 1"),
    (DimmRequest("x", "d1", addr=4 * GiB),
     DeviceMemory(4 * GiB, 7 * GiB, 4, 0, (("vm0", 4 * GiB, 2 * GiB),), ()),
     "address range conflicts with memory device id='vm0'"),
])
def test_qemus_texts(req: DimmRequest, area: DeviceMemory, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        plan_dimm(req, area, backends(d1=GiB, big=16 * GiB, odd=3 * MiB), [])
    assert str(err.value) == message


def test_id_is_checked_first_and_busy_memdev_last() -> None:
    b = backends(d1=GiB)
    b.get("d1").used_by = "dimm1"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"^Duplicate device ID 'dimm1'$"):
        plan_dimm(DimmRequest("dimm1", "d1", slot=9), AREA, b, ["dimm1"])
    with pytest.raises(ConfigError, match=r"^can't use already busy memdev: d1$"):
        plan_dimm(DimmRequest("dimm9", "d1"), AREA, b, ["dimm1"])


def test_backends_texts() -> None:
    b = MemoryBackends()
    b.add("d1", GiB)
    with pytest.raises(ConfigError, match=r"^attempt to add duplicate property 'd1' to object "
                                          r"\(type 'container'\)$"):
        b.add("d1", GiB)
    with pytest.raises(ConfigError, match=r"^can't create backend with size 0$"):
        b.add("z", 0)
    with pytest.raises(ConfigError, match=r"^Parameter 'id' expects an identifier$"):
        b.add("1x", GiB)
    b.get("d1").used_by = "dimm1"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"^object 'd1' is in use, can not be deleted$"):
        b.delete("d1")
    with pytest.raises(ConfigError, match=r"^object 'x' not found$"):
        b.delete("x")


@given(st.lists(st.tuples(st.integers(1, 64), st.booleans()), max_size=12))
def test_placement_never_overlaps_and_stays_in_the_area(sizes: list[tuple[int, bool]]) -> None:
    area_size = 2 * GiB
    occupied: list[tuple[str, int, int]] = []
    for i, (blocks, hinted) in enumerate(sizes):
        size = blocks * DIMM_ALIGN * 8
        hint = 0x1_0000_0000 + (i * 7 % 16) * 64 * MiB if hinted else None
        area = DeviceMemory(0x1_0000_0000, area_size, 64, 0, tuple(occupied), ())
        try:
            addr = free_address(area, hint, size)
        except ConfigError:
            continue
        assert addr % DIMM_ALIGN == 0
        assert area.base <= addr and addr + size <= area.base + area_size
        for _id, other, osize in occupied:
            assert addr + size <= other or other + osize <= addr
        occupied.append((f"d{i}", addr, size))
