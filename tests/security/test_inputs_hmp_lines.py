"""An over-long HMP line is refused whole on every path; no fragment of it ever runs.

Before the fix a ``-monitor`` socket cut a line over 128 KiB into pieces and ran the tail:
``x<300000 spaces>stop`` paused the machine. QEMU's readline keeps only the first 4095
bytes of a line (READLINE_CMD_BUF_SIZE) and runs them; vmemlab refuses the line instead.
"""

from __future__ import annotations

import io
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator import Machine
from monitor.commands import context_for
from monitor.hmp import execute
from monitor.hmp_line import MAX_LINE_BYTES, Overlong, read_line
from monitor.hmp_readline import ReadLine
from monitor.qmp import MonitorServer
from scenarios import ScenarioError, parse_scenario
from tests.conftest import small_config
from tests.security.measure import ROOT

MACHINE = ("-m 64M,maxmem=1G -object memory-backend-ram,id=mem0,size=512M "
           "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=128M")
ATTACK = "x" + " " * 300_000 + "stop"  # the tail is a valid command


def padded(command: str, size: int) -> str:
    """``command`` followed by spaces to exactly ``size`` bytes (spaces are ignored)."""
    return command + " " * (size - len(command))


def test_socket_readline_keeps_whole_lines_and_drops_long_ones() -> None:
    readline = ReadLine()
    out: list[str | Overlong] = []
    echoed = 0
    data = (b"info status\n" + padded("help", MAX_LINE_BYTES).encode() + b"\n"
            + ATTACK.encode() + b"\nquit\n")
    for at in range(0, len(data), 7000):  # any chunking
        for item in readline.feed(data[at:at + 7000]):
            if isinstance(item, bytes):
                echoed += len(item)
            else:
                out.append(item)
        assert len(readline.cmd) <= MAX_LINE_BYTES  # never holds more of a line
    assert out[0] == "info status"
    assert out[1] == padded("help", MAX_LINE_BYTES)
    assert out[2] == Overlong(len(ATTACK))
    assert out[3:] == ["quit"]
    assert echoed < 1 << 20  # QEMU's redraw-per-byte echo would be 33 MB for one long line


def test_read_line_from_a_text_stream() -> None:
    stream = io.StringIO(f"{ATTACK}\n{padded('cont', MAX_LINE_BYTES)}\n{padded('x', 4096)}\nend")
    assert read_line(stream) == Overlong(len(ATTACK))
    assert read_line(stream) == padded("cont", MAX_LINE_BYTES)
    assert read_line(stream) == Overlong(4096)
    assert read_line(stream) == "end"
    assert read_line(stream) is None


@pytest.fixture
def machine() -> Iterator[Machine]:
    with Machine(small_config()) as m:
        m.start()
        yield m


def test_execute_refuses_and_runs_nothing(machine: Machine) -> None:
    ctx = context_for(machine)
    out = execute(ctx, "stop" + " " * MAX_LINE_BYTES)
    assert out == (f"Error: line too long: {MAX_LINE_BYTES + 4} bytes (the monitor reads at "
                   "most 4095 bytes a line); nothing was run\n")
    assert machine.runstate == "running"
    assert execute(ctx, padded("stop", MAX_LINE_BYTES)) == ""  # at the limit: it runs
    assert machine.runstate == "paused"


def recv_until(sock: socket.socket, marker: bytes, timeout: float = 10,
               then: bytes = b"") -> bytes:
    """Read until ``marker`` has arrived (and the data ends with ``then``)."""
    sock.settimeout(timeout)
    data = b""
    while marker not in data or not data.endswith(then):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_monitor_socket_never_runs_a_fragment(machine: Machine, tmp_path: Path) -> None:
    server = MonitorServer(context_for(machine))
    try:
        addr = server.listen("hmp", f"unix:{tmp_path}/hmp.sock")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(addr.path)
            recv_until(sock, b"(qemu) ")
            sock.sendall(ATTACK.encode() + b"\ninfo status\n")
            out = recv_until(sock, b"VM status", then=b"(qemu) ").decode()
        assert out.count("Error: line too long: 300005 bytes") == 1
        assert "VM status: running" in out
        assert machine.runstate == "running"
    finally:
        server.close()


def test_qmp_human_monitor_command_refuses(machine: Machine, tmp_path: Path) -> None:
    import json

    server = MonitorServer(context_for(machine))
    try:
        addr = server.listen("qmp", f"unix:{tmp_path}/qmp.sock")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(addr.path)
            recv_until(sock, b"\r\n")
            sock.sendall(b'{"execute": "qmp_capabilities"}\r\n')
            recv_until(sock, b"\r\n")
            request = {"execute": "human-monitor-command", "arguments": {
                "command-line": "stop" + " " * 5000}, "id": 1}
            sock.sendall(json.dumps(request).encode() + b"\r\n")
            lines = recv_until(sock, b'"id": 1', then=b"\r\n").decode().splitlines()
            reply = json.loads(next(line for line in lines if '"id": 1' in line))
        assert reply["error"]["class"] == "GenericError"
        assert reply["error"]["desc"].startswith("line too long: 5004 bytes")
        assert machine.runstate == "running"
    finally:
        server.close()


def test_stdio_console_of_a_real_process() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=tempfile.gettempdir())
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vmemlab", "run", *shlex.split(MACHINE)],
                          input=f"{ATTACK}\ninfo status\nquit\n", capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Error: line too long: 300005 bytes" in proc.stdout
    assert "VM status: running" in proc.stdout
    assert time.monotonic() - t0 < 30


def test_scenario_monitor_step_is_refused_at_load() -> None:
    text = (f"title: t\nmachine: {MACHINE}\nsteps:\n  - say: hi\n"
            f"  - monitor: '{padded('info status', 5000)}'\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "up.yaml")
    assert str(info.value) == ("up.yaml:5: HMP: line too long: 5000 bytes (the monitor reads "
                               "at most 4095 bytes a line); nothing was run")
