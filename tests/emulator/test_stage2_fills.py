"""The native stage-2 fill decides exactly as the Python fill, and is built and found for real.

Random memory maps (identity windows, virtio-mem devices with random plugged blocks and
negotiated features) and random access streams run through both fills side by side: every
answer (mapped or refused, paddr, perms), every refused access's record and every zero-page
read record must be the same. The C function is called directly (no engine), so hypothesis
can try thousands of accesses per second, including the odd access codes Unicorn never
passes today.
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
from device.virtio_mem import VirtioMemDevice
from emulator import native_stage2, stage2
from emulator.board import ZERO_PAGE_PA, new_engine
from emulator.stage2 import TLB_PAGE_SIZE, Stage2

MiB = 1 << 20
PAGE = TLB_PAGE_SIZE
ROOT = Path(__file__).resolve().parents[2]
C_SOURCE = ROOT / "emulator" / "native" / "stage2_fill.c"
UC_MEM_TYPES = range(16, 26)  # UC_MEM_READ .. UC_MEM_READ_AFTER

needs_native = pytest.mark.skipif(native_stage2.load() is None,
                                  reason=f"native fill: {native_stage2.unavailable_reason()}")


class _NoBackend:
    def plug(self, offset: int, size: int) -> None: ...
    def unplug(self, offset: int, size: int) -> None: ...


def _request(dev: VirtioMemDevice, kind: int, block: int, count: int) -> bytes:
    """A PLUG/UNPLUG request through the device's real request path; the response type."""
    req = struct.pack("<HxxxxxxQH6x", kind, dev.addr + block * dev.block_size, count)
    return dev.handle_request(req)[:2]


def _device(index: int, base: int, blocks: int, shift: int, plugged: list[bool],
            inaccessible: bool) -> VirtioMemDevice:
    size = blocks << shift
    dev = VirtioMemDevice(f"vm{index}", addr=base, region_size=size, block_size=1 << shift,
                          requested_size=size, backend=_NoBackend(), emit=lambda e: None)
    for block, on in enumerate(plugged[:blocks]):
        if on:
            assert _request(dev, proto.VIRTIO_MEM_REQ_PLUG, block, 1) == b"\0\0"
    _negotiate(dev, inaccessible)
    return dev


def _negotiate(dev: VirtioMemDevice, inaccessible: bool) -> None:
    """What the transport does on FEATURES_OK (0 features = a driver reset)."""
    dev.options.unplugged_inaccessible = inaccessible  # offered only when it is accepted
    features = 1 << proto.VIRTIO_F_VERSION_1
    if inaccessible:
        features |= 1 << proto.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE
    assert dev.features_ok(features)
    dev.driver_features = features


@st.composite
def memory_maps(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], list[VirtioMemDevice]]:
    """Identity windows (may overlap each other and the devices: the first match wins) and up
    to four devices with random block sizes, plugged blocks and negotiated features."""
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
        devices.append(_device(i, base, blocks, shift, plugged, draw(st.booleans())))
        base += (blocks << shift) + draw(st.integers(0, 3)) * (1 << shift)
    return identity, devices


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


def _pair(identity: list[tuple[int, int, int]],
          devices: list[VirtioMemDevice]) -> tuple[Stage2, Stage2]:
    fills = []
    for kind in ("native", "python"):
        s2 = Stage2(ZERO_PAGE_PA, fill=kind)
        assert s2.kind == kind
        for start, size, perms in identity:
            s2.add_identity(start, size, perms)
        for dev in devices:
            s2.add_device(dev)
        fills.append(s2)
    return fills[0], fills[1]


def _zero_reads(s2: Stage2) -> list[tuple[str, int, int]]:
    return [(dev.id, first, count) for dev, first, count in s2.take_zero_reads()]


@needs_native
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), layout=memory_maps())
def test_both_fills_decide_every_access_the_same(
        data: st.DataObject,
        layout: tuple[list[tuple[int, int, int]], list[VirtioMemDevice]]) -> None:
    identity, devices = layout
    native, python = _pair(identity, devices)
    addresses = _addresses(identity, devices)
    for _ in range(data.draw(st.integers(1, 60))):
        step = data.draw(st.sampled_from(["access"] * 6 + ["block", "features", "drain"]))
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
        elif step == "features" and devices:
            dev = data.draw(st.sampled_from(devices))
            _negotiate(dev, data.draw(st.booleans()))
            assert native.sync() == python.sync()
        elif step == "drain":
            assert _zero_reads(native) == _zero_reads(python)
    assert _zero_reads(native) == _zero_reads(python)
    assert native.fills is not None and python.fills is None


@needs_native
def test_known_answers_of_both_fills() -> None:
    """The rules themselves, spelled out once (the random test only checks agreement)."""
    dev = _device(0, 0x1000_0000, 4, 21, [True, False, False, False], inaccessible=False)
    inacc = _device(1, 0x2000_0000, 2, 21, [False, True], inaccessible=True)
    for s2 in _pair([(0x4008_0000, 2 * PAGE, 7), (0x4000_0000, 64 * MiB, 3)], [dev, inacc]):
        read, write, fetch = 16, 17, 18
        assert s2.decide(0x4008_0123, fetch) == (True, 0x4008_0000, 7)  # the image
        assert s2.decide(0x4008_2000, write) == (True, 0x4008_2000, 3)  # boot RAM
        assert s2.decide(0x1000_1234, write) == (True, 0x1000_1000, 3)  # plugged
        assert s2.decide(0x1020_0008, read) == (True, ZERO_PAGE_PA, 1)  # unplugged: zero page
        assert s2.decide(0x1000_0000, fetch)[0] is False
        assert s2.denied is not None
        assert s2.denied.reason == "instruction fetch from device memory"
        assert s2.decide(0x1030_0000, write)[0] is False
        assert s2.denied is not None and (s2.denied.device, s2.denied.access, s2.denied.reason) \
            == ("vm0", "write", "write to unplugged block")
        assert s2.decide(0x2000_0040, read)[0] is False
        assert s2.denied is not None and "UNPLUGGED_INACCESSIBLE" in s2.denied.reason
        assert s2.decide(0x2020_0040, read) == (True, 0x2020_0000, 3)
        assert s2.decide(0x9000_0000, read)[0] is False
        assert s2.denied is not None and (s2.denied.device, s2.denied.reason) \
            == (None, "unmapped address")
        assert [(d.id, f, n) for d, f, n in s2.take_zero_reads()] == [("vm0", 1, 1)]
        assert s2.take_zero_reads() == []
        # a driver reset drops UNPLUGGED_INACCESSIBLE: reads see the zero page again
        inacc.driver_features = 0
        assert s2.sync() is True
        assert s2.decide(0x2000_0040, read) == (True, ZERO_PAGE_PA, 1)
        _negotiate(inacc, True)
        assert s2.sync() is True


@needs_native
def test_a_mapped_bitmap_can_change_but_never_move() -> None:
    """The C side holds a raw pointer to the device's bitmap: resizing it must be impossible."""
    dev = _device(0, 0x1000_0000, 4, 21, [False] * 4, inaccessible=False)
    s2 = Stage2(ZERO_PAGE_PA, fill="native")
    s2.add_device(dev)
    with pytest.raises(BufferError):
        dev.bitmap.append(0)
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
