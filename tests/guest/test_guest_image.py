"""The committed guest image is exactly what the sources build, and the ABI has one truth."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from emulator import abi

GUEST = Path(__file__).resolve().parents[2] / "guest"


@pytest.mark.skipif(not all(shutil.which(t) for t in ("clang", "ld.lld", "llvm-objcopy")),
                    reason="needs clang, lld and llvm to rebuild the guest")
def test_committed_image_matches_sources() -> None:
    subprocess.run(["make", "-s", "-C", str(GUEST), "check"], check=True)


def test_python_abi_mirrors_the_c_header() -> None:
    header = (GUEST / "include" / "abi.h").read_text()
    defines = {}
    for name, expr in re.findall(r"^#define\s+(\w+)\s+([^/\n]+?)\s*(?:/\*.*)?$", header, re.M):
        expr = re.sub(r"(0x[0-9A-Fa-f]+|\d+)UL?\b", r"\1", expr)
        if re.fullmatch(r"[0-9A-Fa-fx()<< ]+", expr):
            defines[name] = eval(expr)  # digits, parentheses and shifts only
    checked = 0
    for name, value in defines.items():
        py_name = name.removeprefix("ABI_")
        if hasattr(abi, py_name):
            assert getattr(abi, py_name) == value, name
            checked += 1
    assert checked >= 40


def test_struct_sizes_match_the_header_layout() -> None:
    assert abi.BOOTINFO_HEAD.size == 56
    assert abi.BOOTINFO_HOTPLUG.size == 4 * 8 + 2 * 4
    assert abi.BOOTINFO_SIZE == 56 + 8 * 24 + 8 * 16 + 256 + 40
    assert abi.PVB_VIEW.size == 5 * 8 + 2 * 4
    assert abi.DIMM_VIEW.size == 7 * 8 + 2 * 4 + 2 * 8
    assert abi.DEVICE_VIEW.size == 16 * 8 + 8 + 9 * 8
    assert abi.VIEW_HEAD.size == 8 + 4 + 4 + 8 * 8 + 4 + 4 + 8
    assert abi.BLOCK_USAGE.size == 24
    assert abi.ALLOC_RECORD.size == 32
