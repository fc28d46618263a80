"""The native stage-2 fill decides exactly as the Python fill, and is built and found for real.

Random memory maps (identity windows, virtio-mem devices with random plugged blocks, random
unplugged-memory policies -- shipped QEMU, ``x-rfc-write-protect``, ``dynamic-memslots`` with
random memslot sizes, an x86 or an arm machine) and random access streams run through both
fills side by side: every answer (mapped or refused, paddr, perms), every refused access's
record, every zero-page read record and every written-while-unplugged record must be the same.
The C function is called directly (no engine), so hypothesis can try thousands of accesses
per second, including the odd access codes Unicorn never passes today.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import cast

import pytest
import unicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_ARCH_ARM64, UC_MODE_ARM, UC_TLB_VIRTUAL, Uc, UcError
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from device import virtio_mem_protocol as proto
from device.virtio_mem import VirtioMemDevice, VirtioMemOptions
from emulator import native_stage2, stage2
from emulator.board import ZERO_PAGE_PA, new_engine
from emulator.stage2 import TLB_PAGE_SIZE, Stage2

MiB = 1 << 20
PAGE = TLB_PAGE_SIZE
ROOT = Path(__file__).resolve().parents[2]
C_SOURCE = ROOT / "emulator" / "native" / "stage2_fill.c"
UC_MEM_TYPES = range(16, 26)  # UC_MEM_READ .. UC_MEM_READ_AFTER
READ, WRITE, FETCH = 16, 17, 18

needs_native = pytest.mark.skipif(native_stage2.load() is None,
                                  reason=f"native fill: {native_stage2.unavailable_reason()}")


class _NoBackend:
    def plug(self, offset: int, size: int) -> None: ...
    def unplug(self, offset: int, size: int) -> None: ...


def _request(dev: VirtioMemDevice, kind: int, block: int, count: int) -> bytes:
    """A PLUG/UNPLUG request through the device's real request path; the response type."""
    req = struct.pack("<HxxxxxxQH6x", kind, dev.addr + block * dev.block_size, count)
    return dev.handle_request(req)[:2]


def _device(index: int, base: int, blocks: int, shift: int, plugged: list[bool], *,
            write_protect: bool = False, memslot_blocks: int = 0) -> VirtioMemDevice:
    """``memslot_blocks`` > 0: dynamic-memslots with memslots of that many blocks."""
    size = blocks << shift
    options = VirtioMemOptions(unplugged_inaccessible=True, rfc_write_protect=write_protect)
    if memslot_blocks:
        options.dynamic_memslots = True
        options.memslot_size = memslot_blocks << shift
        options.nb_memslots = -(-blocks // memslot_blocks)
    dev = VirtioMemDevice(f"vm{index}", addr=base, region_size=size, block_size=1 << shift,
                          requested_size=size, options=options, backend=_NoBackend(),
                          emit=lambda e: None)
    for block, on in enumerate(plugged[:blocks]):
        if on:
            assert _request(dev, proto.VIRTIO_MEM_REQ_PLUG, block, 1) == b"\0\0"
    return dev


@st.composite
def memory_maps(draw: st.DrawFn
                ) -> tuple[list[tuple[int, int, int]], list[VirtioMemDevice], bool]:
    """Identity windows (may overlap each other and the devices: the first match wins), up
    to four devices with random block sizes, plugged blocks and policies, and whether the
    machine is an x86 one (an access with no memslot reads 0 and drops its write)."""
    identity = [
        (draw(st.integers(0, 0x4000)) * PAGE, draw(st.integers(1, 64)) * PAGE,
         draw(st.integers(0, 7)))
        for _ in range(draw(st.integers(0, 5)))
    ]
    devices = []
    base = 0x1000_0000
    for i in range(draw(st.integers(0, 4))):
        shift = draw(st.integers(20, 22))  # 1, 2 or 4 MiB blocks
        blocks = draw(st.integers(1, 12))
        plugged = draw(st.lists(st.booleans(), min_size=blocks, max_size=blocks))
        base = -(-base >> shift) << shift  # QEMU aligns memaddr to the block size
        memslot_blocks = draw(st.sampled_from([0, 0, 1, 2, 3, 5, blocks]))
        devices.append(_device(i, base, blocks, shift, plugged,
                               write_protect=draw(st.booleans()),
                               memslot_blocks=min(memslot_blocks, blocks)))
        base += (blocks << shift) + draw(st.integers(0, 3)) * (1 << shift)
    return identity, devices, draw(st.booleans())


def _addresses(identity: list[tuple[int, int, int]],
               devices: list[VirtioMemDevice]) -> st.SearchStrategy[int]:
    """Inside, at the edges of and outside every window, and anywhere at all."""
    edges = [0, 2**64 - 1]
    for start, size, _ in identity:
        edges += [start, start + size - 1, start + size, max(start - 1, 0)]
    for dev in devices:
        end = dev.addr + dev.region_size
        edges += [dev.addr, dev.addr - 1, end - 1, end]
    spans = [(s, s + n) for s, n, _ in identity]
    spans += [(d.addr, d.addr + d.region_size) for d in devices]
    inside = [st.integers(lo, hi - 1) for lo, hi in spans]
    return st.one_of(st.sampled_from(edges), st.integers(0, 2**64 - 1),
                     st.integers(0, 0x2000_0000), *inside)


def _pair(identity: list[tuple[int, int, int]], devices: list[VirtioMemDevice],
          x86: bool = False) -> tuple[Stage2, Stage2]:
    fills = []
    for kind in ("native", "python"):
        s2 = Stage2(ZERO_PAGE_PA, fill=kind, unassigned_ignored=x86)
        assert s2.kind == kind
        for start, size, perms in identity:
            s2.add_identity(start, size, perms)
        for dev in devices:
            s2.add_device(dev)
        fills.append(s2)
    return fills[0], fills[1]


def _zero_reads(s2: Stage2) -> list[tuple[str, int, int]]:
    return [(dev.id, first, count) for dev, first, count in s2.take_zero_reads()]


def _writes(s2: Stage2) -> list[tuple[str, int, int]]:
    return [(dev.id, first, count) for dev, first, count in s2.take_unplugged_writes()]


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), layout=memory_maps())
def test_both_fills_decide_every_access_the_same(
        data: st.DataObject,
        layout: tuple[list[tuple[int, int, int]], list[VirtioMemDevice], bool]) -> None:
    """The one decision (stage2.policy_for + both fill_device branches) under every policy:
    shipped QEMU, x-rfc-write-protect, dynamic-memslots on arm and on x86."""
    identity, devices, x86 = layout
    native, python = _pair(identity, devices, x86)
    addresses = _addresses(identity, devices)
    steps = ["access"] * 6 + ["block", "discard", "drain", "drain-writes"]
    for _ in range(data.draw(st.integers(1, 60))):
        step = data.draw(st.sampled_from(steps))
        if step == "access":
            addr = data.draw(addresses)
            access = data.draw(st.sampled_from(UC_MEM_TYPES))
            answer = python.decide(addr, access)
            assert native.decide(addr, access) == answer, (hex(addr), access)
            assert native.denied == python.denied
            if answer[0]:
                assert native.denied is None
            else:
                assert python.denied is not None and python.denied.addr == addr
            native.denied = python.denied = None
        elif step == "block" and devices:
            dev = data.draw(st.sampled_from(devices))
            block = data.draw(st.integers(0, dev.nb_blocks - 1))
            kind = (proto.VIRTIO_MEM_REQ_UNPLUG if dev.is_plugged(block)
                    else proto.VIRTIO_MEM_REQ_PLUG)
            assert _request(dev, kind, block, 1) == b"\0\0"
        elif step == "discard" and devices:
            dev = data.draw(st.sampled_from(devices))
            first = data.draw(st.integers(0, dev.nb_blocks - 1))
            count = data.draw(st.integers(1, dev.nb_blocks - first))
            for s2 in (native, python):
                s2.forget_writes(dev, first * dev.block_size, count * dev.block_size)
        elif step == "drain":
            assert _zero_reads(native) == _zero_reads(python)
        elif step == "drain-writes":
            assert _writes(native) == _writes(python)
    assert _zero_reads(native) == _zero_reads(python)
    assert _writes(native) == _writes(python)
    for dev in devices:
        assert native.written_blocks(dev) == python.written_blocks(dev)
    assert native.fills is not None and python.fills is None


@needs_native
def test_known_answers_of_both_fills() -> None:
    """The rules themselves, spelled out once (the random test only checks agreement).

    Shipped QEMU protects nothing: ``virtio_mem_set_block_state`` only discards on unplug and
    the whole memdev stays mapped ("With "dynamic-memslots=off" (old behavior) we always map
    the whole RAM memory region directly"), so a write to an unplugged block reaches its host
    page. x-rfc-write-protect refuses it. With dynamic memslots, ``virtio_mem_activate_memslot``
    maps a memslot only while something in it is plugged; where nothing is mapped TCG on arm
    raises ``ARMFault_SyncExternal`` (``arm_cpu_do_transaction_failed``) and x86 reads 0 and
    drops the write (``unassigned_mem_read`` returns 0, ``unassigned_mem_write`` does nothing).
    """
    shipped = _device(0, 0x1000_0000, 4, 21, [True, False, False, False])
    protected = _device(1, 0x2000_0000, 2, 21, [False, True], write_protect=True)
    memslots = _device(2, 0x3000_0000, 4, 21, [True, False, False, False], memslot_blocks=2)
    for x86 in (False, True):
        for s2 in _pair([(0x4008_0000, 2 * PAGE, 7), (0x4000_0000, 64 * MiB, 3)],
                        [shipped, protected, memslots], x86):
            assert s2.decide(0x4008_0123, FETCH) == (True, 0x4008_0000, 7)  # the image
            assert s2.decide(0x4008_2000, WRITE) == (True, 0x4008_2000, 3)  # boot RAM
            assert s2.decide(0x1000_1234, WRITE) == (True, 0x1000_1000, 3)  # plugged
            # shipped: an empty unplugged block reads the zero page; a write goes through
            assert s2.decide(0x1020_0008, READ) == (True, ZERO_PAGE_PA, 1)
            assert s2.decide(0x1000_0000, FETCH)[0] is False
            assert s2.denied is not None
            assert s2.denied.reason == "instruction fetch from device memory"
            assert s2.decide(0x1030_0000, WRITE) == (True, 0x1030_0000, 3)
            assert s2.decide(0x1030_1000, READ) == (True, 0x1030_1000, 1)  # the written data
            assert [(d.id, f, n) for d, f, n in s2.take_unplugged_writes()] == [("vm0", 1, 1)]
            assert s2.take_unplugged_writes() == []
            # the RFC's write protection
            assert s2.decide(0x2000_0040, READ) == (True, ZERO_PAGE_PA, 1)
            assert s2.decide(0x2000_0040, WRITE)[0] is False
            assert s2.denied is not None and (s2.denied.device, s2.denied.access) == \
                ("vm1", "write")
            assert "x-rfc-write-protect" in s2.denied.reason
            assert s2.decide(0x2020_0040, WRITE) == (True, 0x2020_0000, 3)  # plugged
            # dynamic memslots: memslot 0 (blocks 0-1) is mapped, memslot 1 (2-3) is not
            assert s2.decide(0x3020_0000, WRITE) == (True, 0x3020_0000, 3)  # still mapped
            s2.denied = None
            if x86:
                assert s2.decide(0x3040_0000, READ) == (True, ZERO_PAGE_PA, 1)
                assert s2.decide(0x3040_0000, WRITE)[0] is False
                assert s2.denied is not None and s2.denied.fault == "dropped"
            else:
                assert s2.decide(0x3040_0000, READ)[0] is False
                assert s2.denied is not None and s2.denied.fault == "external"
            assert s2.decide(0x9000_0000, READ)[0] is False
            assert s2.denied is not None and (s2.denied.device, s2.denied.reason) \
                == (None, "unmapped address")
            assert [(d.id, f, n) for d, f, n in s2.take_zero_reads()] == \
                [("vm0", 1, 1), ("vm1", 0, 1)]
            # a discard frees what was written: the block reads the zero page again
            s2.forget_writes(shipped, 0, shipped.region_size)
            assert s2.decide(0x1030_1000, READ) == (True, ZERO_PAGE_PA, 1)
    # plugging into memslot 1 maps it (QEMU: activate before plugging)
    assert _request(memslots, proto.VIRTIO_MEM_REQ_PLUG, 3, 1) == b"\0\0"
    assert bytes(memslots.memslots) == b"\x01\x01"
    for s2 in _pair([], [memslots]):
        assert s2.decide(0x3040_0000, WRITE) == (True, 0x3040_0000, 3)
    # unplugging the last plugged block of a memslot unmaps it (deactivate after unplug)
    assert _request(memslots, proto.VIRTIO_MEM_REQ_UNPLUG, 0, 1) == b"\0\0"
    assert bytes(memslots.memslots) == b"\x00\x01"


@needs_native
def test_a_mapped_bitmap_can_change_but_never_move() -> None:
    """The C side holds a raw pointer to the device's bitmap: resizing it must be impossible."""
    dev = _device(0, 0x1000_0000, 4, 21, [False] * 4, memslot_blocks=2)
    s2 = Stage2(ZERO_PAGE_PA, fill="native")
    s2.add_device(dev)
    with pytest.raises(BufferError):
        dev.bitmap.append(0)
    with pytest.raises(BufferError):
        dev.memslots.append(0)
    assert len(dev.bitmap) == 4
    assert _request(dev, proto.VIRTIO_MEM_REQ_PLUG, 2, 2) == b"\0\0"  # same length: fine
    assert s2.decide(0x1060_0000, 17) == (True, 0x1060_0000, 3)
    dev.load(dev.save())  # a migration restores the bitmap in place
    assert s2.decide(0x1060_0000, 17) == (True, 0x1060_0000, 3)


def test_windows_must_be_whole_tlb_pages() -> None:
    s2 = Stage2(ZERO_PAGE_PA, fill="python")
    with pytest.raises(ValueError, match="TLB pages"):
        s2.add_identity(0x4008_0000, 0x400)
    with pytest.raises(ValueError, match="TLB pages"):
        s2.add_identity(0x4008_0400, PAGE)


def test_the_environment_variable_selects_the_python_fill(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(stage2.FILL_ENV, "python")
    assert Stage2(ZERO_PAGE_PA).kind == "python"
    monkeypatch.setenv(stage2.FILL_ENV, "native")
    expected = "native" if native_stage2.load() is not None else "python"
    assert Stage2(ZERO_PAGE_PA).kind == expected


def test_without_the_library_the_python_fill_runs_and_says_so_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(stage2.FILL_ENV, raising=False)
    monkeypatch.setattr(native_stage2, "library_paths", lambda: [tmp_path / "missing.so"])
    monkeypatch.setattr(native_stage2, "_loaded", [])
    monkeypatch.setattr(stage2, "_noted", set())
    with caplog.at_level(logging.WARNING, logger="emulator.stage2"):
        assert Stage2(ZERO_PAGE_PA).kind == "python"
        assert Stage2(ZERO_PAGE_PA).kind == "python"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "using the Python fill" in notes[0] and "\n" not in notes[0]


def test_a_library_with_another_layout_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stale or foreign build must never be handed the map (it would read garbage)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "other.c"
    src.write_text("#include <stdint.h>\nuint64_t vmemlab_stage2_layout(int w) { return 8; }\n"
                   "int vmemlab_stage2_fill(void) { return 1; }\n")
    lib = tmp_path / "other.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    monkeypatch.setattr(native_stage2, "library_paths", lambda: [lib])
    monkeypatch.setattr(native_stage2, "_loaded", [])
    assert native_stage2.load() is None
    assert "struct layout" in native_stage2.unavailable_reason()


# ------------------------------------------------------------------ the build


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    return cc


def test_the_library_is_built_where_a_compiler_exists() -> None:
    """``make venv`` builds it; a missing library here means the build silently broke."""
    _compiler()
    assert native_stage2.load() is not None, native_stage2.unavailable_reason()


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_the_c_fill_matches_unicorns_own_header(cc: str, tmp_path: Path) -> None:
    """Compiled against the installed unicorn/unicorn.h, the callback must have the type of
    ``uc_cb_tlbevent_t`` and the mirrored enums must agree (-Werror)."""
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    include = Path(unicorn.__file__).parent / "include"
    if not (include / "unicorn" / "unicorn.h").exists():
        pytest.skip("the unicorn package ships no header")
    out = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", f"-I{include}",
         "-DVMEMLAB_REQUIRE_UNICORN_H", str(C_SOURCE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("compiler", ["default", "failing"])
def test_the_package_builds_with_or_without_the_library(compiler: str, tmp_path: Path) -> None:
    """A wheel of a clean copy: with a working compiler it carries the library; with one that
    fails the build still succeeds, without it (the machine then uses the Python fill)."""
    if compiler == "default":
        _compiler()
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")
    for package in ("control", "device", "emulator", "monitor", "scenarios", "vmemlab", "webapp"):
        shutil.copytree(ROOT / package, src / package, ignore=skip)
    env = dict(os.environ)
    if compiler == "failing":
        env.update(CC="false", LDSHARED="false")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("vmemlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    built = [n for n in names if n.startswith("emulator/_stage2_fill")]
    assert len(built) == (1 if compiler == "default" else 0), names
    assert not [n for n in names if n.endswith(".c")]
    assert "scenarios/scenario.schema.json" in names


# ------------------------------------------------------------------ the engine's page size


def test_the_page_size_must_be_set_before_the_engine_initialises() -> None:
    """What docs/engine-notes.md says: 4 KiB is accepted first thing, refused afterwards."""
    uc = new_engine()
    assert uc.ctl_get_page_size() == PAGE
    late = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))  # what new_engine() does
    late.ctl_set_tlb_mode(UC_TLB_VIRTUAL)  # runs UC_INIT
    assert late.ctl_get_page_size() == 1024  # Unicorn's AArch64 default
    with pytest.raises(UcError):
        late.ctl_set_page_size(PAGE)
