"""Crafted migration streams: QEMU-style errors, never a traceback, and corruption is caught.

Before the fix ``-incoming`` with crafted files raised KeyError/AttributeError/TypeError/
ValueError/OverflowError tracebacks, ``wait_remaining: Infinity`` loaded and then killed the
vCPU thread (OverflowError in Condition.wait; the guest froze while ``info status`` still
said running), and a flipped byte in RAM loaded silently.
"""

from __future__ import annotations

import copy
import io
import json
import shlex
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.errors import MigrationError
from emulator import Machine, migration
from emulator.migration_header import MAX_WAIT_S
from tests.conftest import small_config, wait_settled
from tests.security.measure import ROOT

MACHINE = ("-m 64M,maxmem=1G -object memory-backend-ram,id=mem0,size=512M "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=128M")


@pytest.fixture(scope="module")
def stream() -> bytes:
    """A real stream: small_config (= MACHINE) settled at 128 MiB, the guest in WAIT."""
    with Machine(small_config()) as source:
        source.start()
        wait_settled(source)
        assert source.wait_until(lambda m: m.paravirt.waiting, 10)
        out = io.BytesIO()
        source.save(out)
    data = out.getvalue()
    assert split(data)[0]["machine"]["waiting"] is True
    return data


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, everything after the header section)."""
    at = len(migration.MAGIC) + migration.VERSION_WORD.size
    kind, length = migration.SECTION.unpack_from(data, at)
    assert kind == migration.HEADER
    start = at + migration.SECTION.size
    return json.loads(data[start:start + length]), data[start + length + migration.CRC.size:]


def build(header: dict[str, Any] | None, rest: bytes, raw: bytes | None = None) -> bytes:
    """A stream with this header and valid checksums (an attacker can compute CRCs too)."""
    body = raw if raw is not None else json.dumps(header).encode()
    head = migration.SECTION.pack(migration.HEADER, len(body))
    crc = migration.CRC.pack(zlib.crc32(body, zlib.crc32(head)))
    return migration.MAGIC + migration.VERSION_WORD.pack(migration.VERSION) + head + body + \
        crc + rest


def load(data: bytes) -> Machine:
    dest = Machine(small_config(), incoming=True)
    try:
        dest.load_state(io.BytesIO(data))
    except BaseException:
        dest.close()
        raise
    return dest


def edit(stream: bytes, change: Any) -> bytes:
    header, rest = split(stream)
    header = copy.deepcopy(header)
    change(header)
    return build(header, rest)


CRAFTED = {
    "no cpu": (lambda h: h.pop("cpu"), "header: 'cpu' is a required property"),
    "ramblocks list": (lambda h: h.update(ramblocks=[]), "ramblocks: [] is not of type"),
    "devices null": (lambda h: h.update(devices=None), "devices: None is not of type"),
    "pc string": (lambda h: h["cpu"].update(pc="x"), "cpu.pc: 'x' is not of type 'integer'"),
    "pc float": (lambda h: h["cpu"].update(pc=1.0), "cpu.pc: 1.0 is not of type 'integer'"),
    "pc too big": (lambda h: h["cpu"].update(pc=1 << 64), "cpu.pc: 18446744073709551616 is"),
    "pstate EL3": (lambda h: h["cpu"].update(pstate=0x3CD), "not an AArch64 EL0/EL1 state"),
    "negative wait": (lambda h: h["machine"].update(wait_remaining=-1),
                      "machine.wait_remaining"),
    "extra device": (lambda h: h["devices"].update(evil=h["devices"]["vm0"]),
                     "Unknown savevm section or instance 'evil' 0"),
    "missing device": (lambda h: h["devices"].clear(),
                       "Missing section for device 'vm0' in migration stream"),
    "guest state of nothing": (lambda h: h["machine"]["guest_states"].update(x="idle"),
                               "guest state for unknown device 'x'"),
    "device state list": (lambda h: h["devices"]["vm0"].update(device=[]),
                          "devices.vm0.device: [] is not of type 'object'"),
    "queue_num string": (lambda h: h["devices"]["vm0"]["transport"].update(queue_num="8"),
                         "queue_num: '8' is not of type 'integer'"),
    "bad bitmap": (lambda h: h["devices"]["vm0"]["device"].update(bitmap="!!"),
                   "virtio-mem 'vm0': invalid state"),
    "unknown ramblock": (lambda h: h["ramblocks"].update({"x": 1}),
                         'Unknown ramblock "x", cannot accept migration'),
    "version 7": (lambda h: h.update(version=7), "Unsupported migration stream version 7"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_headers_are_migration_errors(stream: bytes, name: str) -> None:
    change, message = CRAFTED[name]
    with pytest.raises(MigrationError) as info:
        load(edit(stream, change))
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"version": 2, "machine": {"wait_remaining": Infinity}}', "Infinity is not a number"),
    (b'{"version": 2, "x": NaN}', "NaN is not a number here"),
    (b'{"version": 2, "x": 1e400}', "the number 1e400 is out of range"),
    (b'{"version": ' + b"9" * 5000 + b"}", "an integer of 5000 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "Invalid migration header"),
    (b"[1, 2]", "header: [1, 2] is not of type 'object'"),
    (b"\xff\xfe", "not JSON"),
])
def test_header_json_is_bounded(stream: bytes, raw: bytes, message: str) -> None:
    _, rest = split(stream)
    with pytest.raises(MigrationError, match="Invalid migration header") as info:
        load(build(None, rest, raw=raw))
    assert message in str(info.value)


def test_flipped_bytes_anywhere_are_caught_by_the_checksums(stream: bytes) -> None:
    for at in (len(stream) - 100, len(stream) // 2, 60):
        data = bytearray(stream)
        data[at] ^= 0x40
        with pytest.raises(MigrationError, match=r"is corrupt: CRC32|Unknown savevm section|"
                                                 r"claims \d+ bytes"):
            load(bytes(data))


def test_stream_framing_errors(stream: bytes) -> None:
    header, _rest = split(stream)
    good_header = build(header, b"")
    cases = [
        (b"QEVM" + stream[4:], "Not a migration stream"),
        (migration.MAGIC + b"\x01\x00\x00\x00{", "Unsupported migration stream version 1"),
        (migration.MAGIC + b"\x09\x00\x00\x00\x00", "Unsupported migration stream version 9"),
        (good_header + b"\x09\x00\x00\x00\x00", "Unknown savevm section type 9"),
        (good_header + migration.SECTION.pack(migration.RAM, 1 << 30),
         "claims 1073741824 bytes"),
        (stream[: len(stream) // 2], "unexpected end of file"),
        (migration.MAGIC + migration.VERSION_WORD.pack(2) + migration.SECTION.pack(
            migration.HEADER, migration.MAX_HEADER_BYTES + 1), "claims 4194305 bytes"),
    ]
    for data, message in cases:
        with pytest.raises(MigrationError) as info:
            load(data)
        assert message in str(info.value), str(info.value)


def ram_section(gpa: int, pages: int, fill: bytes = b"\x5a") -> bytes:
    payload = migration.RUN.pack(gpa, pages) + fill * (pages * 4096)
    head = migration.SECTION.pack(migration.RAM, len(payload))
    return head + payload + migration.CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


def test_ram_runs_must_be_aligned_inside_ram_and_plugged(stream: bytes) -> None:
    header, _rest = split(stream)
    region = Machine(small_config(), incoming=True)
    try:
        dev_addr = region.devices["vm0"].addr
    finally:
        region.close()
    end = migration.SECTION.pack(migration.END, 0)
    end += migration.CRC.pack(zlib.crc32(end))
    unplugged = dev_addr + 400 * (1 << 20)  # 128 MiB plugged: 400 MiB is not
    for gpa, message in [(0x4000_0001, "is malformed"), (0x1000, "outside RAM"),
                         (unplugged, "writes unplugged memory of 'vm0'")]:
        with pytest.raises(MigrationError, match=message):
            load(build(header, ram_section(gpa, 1) + end))


def test_a_guest_waiting_for_the_longest_time_still_runs_and_quits(stream: bytes,
                                                                     tmp_path: Path) -> None:
    """The largest finite wait a stream may carry: the vCPU thread survives it."""
    def longest_wait(h: dict[str, Any]) -> None:
        h["machine"].update(wait_remaining=MAX_WAIT_S, pending_events=0)

    dest = load(edit(stream, longest_wait))
    try:
        dest.start()
        time.sleep(0.3)
        assert dest.vcpu.alive
        dest.set_requested_size("vm0", 256 << 20)  # an event wakes the waiting guest
        wait_settled(dest)
        assert dest.devices["vm0"].plugged_size == 256 << 20
    finally:
        dest.close()


def run_incoming(image: Path, stdin: str = "quit\n") -> tuple[subprocess.CompletedProcess[str],
                                                              float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vmemlab", "run", *shlex.split(MACHINE),
                           "-incoming", f"exec:cat {image}"], input=stdin, text=True,
                          capture_output=True, timeout=60, cwd=ROOT)
    return proc, time.monotonic() - t0


def test_vmemlab_run_incoming_crafted_files(stream: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.img"
    for name in ("no cpu", "pc string", "devices null"):
        bad.write_bytes(edit(stream, CRAFTED[name][0]))
        proc, _ = run_incoming(bad)
        assert proc.returncode == 1
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 2, proc.stderr  # the reason, then QEMU's closing line
        assert lines[0].startswith("vmemlab: Invalid migration header: ")
        assert lines[1] == "vmemlab: load of migration failed: Invalid argument"
    _, rest = split(stream)
    bad.write_bytes(build(None, rest, raw=json.dumps(split(stream)[0]).replace(
        '"wait_remaining": null', '"wait_remaining": Infinity').encode()))
    proc, _ = run_incoming(bad)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == ("vmemlab: Invalid migration header: Infinity is not "
                                           "a number here")


def test_vmemlab_run_incoming_longest_wait_then_quit_exits(stream: bytes,
                                                           tmp_path: Path) -> None:
    image = tmp_path / "wait.img"
    image.write_bytes(edit(stream, lambda h: h["machine"].update(
        wait_remaining=MAX_WAIT_S, pending_events=0)))
    proc, elapsed = run_incoming(image, "info status\nquit\n")
    assert proc.returncode == 0, proc.stderr
    assert "VM status: running" in proc.stdout
    assert proc.stderr == "" and elapsed < 30


# ------------------------------------------------------------------------------ fuzzing

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_migration_loader(stream: bytes, data: st.DataObject) -> None:
    """Mutated headers (with valid CRCs) and mutated bytes: only MigrationError comes out."""
    if data.draw(st.booleans()):
        header, rest = split(stream)
        header = copy.deepcopy(header)
        for _ in range(data.draw(st.integers(1, 3))):
            node: Any = header
            path = []
            while isinstance(node, dict) and node and data.draw(st.booleans()):
                key = data.draw(st.sampled_from(sorted(node)))
                path.append(key)
                if not isinstance(node[key], dict):
                    break
                node = node[key]
            if not isinstance(node, dict) or not node:
                continue
            key = data.draw(st.sampled_from(sorted(node)))
            node[key] = data.draw(st.one_of(
                st.none(), st.booleans(), st.integers(), st.integers(-2, 2),
                st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
                st.lists(st.integers(), max_size=2), st.just({})))
        blob = build(header, rest)
    else:
        mutated = bytearray(stream)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(mutated) - 1))
            mutated[at] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
        blob = bytes(mutated)
    try:
        dest = load(blob)
    except MigrationError:
        return
    dest.close()
