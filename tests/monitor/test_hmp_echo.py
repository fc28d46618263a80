"""HMP on a socket echoes what is typed as QEMU's readline does; stdio and QMP do not.

QEMU 7.2's ``-monitor unix:…,server,nowait`` runs every byte through ``util/readline.c``
and redraws the line after each one (``readline_update``); the transcripts' recording client
(``tools/qg.py``, copied in ``qg_hmp.py``) strips that echo up to the first CRLF. The expected
bytes here are derived from ``readline.c`` by hand, byte by byte.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qemu.qmp import QMPClient

from emulator import Machine
from monitor.commands import MonitorContext
from monitor.hmp_line import MAX_LINE_BYTES, Overlong
from monitor.hmp_readline import ECHO_BUDGET, EXACT_ECHO_BYTES, ReadLine
from monitor.qmp import MonitorServer
from monitor.readline_console import run_console

from . import qg_hmp
from .conftest import readline_echo

BANNER = b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "
L, K = b"\033[D", b"\033[K"  # cursor left, erase to end of line


@pytest.fixture
def hmp_path(server: MonitorServer, tmp_path: Path) -> str:
    path = str(tmp_path / "hmp.sock")
    server.listen("hmp", f"unix:{path}")
    return path


class Raw:
    """A byte-level HMP client: what a ``socat`` or ``nc -U`` user gets."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        assert self.until(b"(qemu) ") == BANNER

    def until(self, end: bytes, count: int = 1) -> bytes:
        buf = b""
        while buf.count(end) < count or not buf.endswith(end):
            chunk = self.sock.recv(65536)
            assert chunk, buf
            buf += chunk
        return buf

    def send(self, data: bytes, prompts: int = 1) -> bytes:
        self.sock.sendall(data)
        return self.until(b"(qemu) ", prompts)


def test_socket_echo_byte_for_byte(hmp_path: str, machine: Machine) -> None:
    hmp = Raw(hmp_path)
    assert hmp.send(b"stop\n") == (b"s" + K + L + b"st" + K + L * 2 + b"sto" + K
                                   + L * 3 + b"stop" + K + b"\r\n(qemu) ")
    assert machine.runstate == "paused"
    assert hmp.send(b"info status\n") == (readline_echo(b"info status")
                                          + b"VM status: paused\r\n(qemu) ")
    assert hmp.send(b"c\n") == b"c" + K + b"\r\n(qemu) "
    assert machine.runstate == "running"


def test_transcript_client_reads_the_transcript_texts(hmp_path: str) -> None:
    """The recording client strips the first line of every answer: without the echo it
    would have lost ``1 nodes`` here, the way vmemlab's old socket lost it."""
    hmp = qg_hmp.HMP(hmp_path, None)
    assert hmp.banner == BANNER.decode()
    assert hmp.cmd("info numa", log=False) == (  # 01_main_lifecycle.txt
        "1 nodes\nnode 0 cpus: 0 1\nnode 0 size: 1536 MB\nnode 0 plugged: 512 MB\n")
    assert hmp.cmd("qom-get vm0 size", log=False) == "536870912\n"
    assert hmp.cmd("qom-set vm0 requested-size 512M", log=False) == ""  # "<no output>"
    assert hmp.cmd("info virtio", log=False) == (
        "/machine/peripheral/vm0/virtio-backend [virtio-mem]\n")
    hmp.close()


def test_editing_history_and_control_keys(hmp_path: str, machine: Machine) -> None:
    hmp = Raw(hmp_path)
    # a typo, backspace (DEL), the rest: "stop" runs
    assert hmp.send(b"stx\x7fop\n") == (
        b"s" + K + L + b"st" + K + L * 2 + b"stx" + K
        + L * 3 + b"st" + K  # DEL: redraw "st" from the start of the line
        + L * 2 + b"sto" + K + L * 3 + b"stop" + K + b"\r\n(qemu) ")
    assert machine.runstate == "paused"
    # up arrow (ESC [ A) brings "stop" back; ^A / ^E move; ^W deletes the word
    assert hmp.send(b"\033[A\x01\x05\x17cont\n") == (
        b"stop" + K + L * 4 + b"\033[C" * 4 + L * 4 + K
        + readline_echo(b"cont") + b"(qemu) ")
    assert machine.runstate == "running"


def test_tab_completion(hmp_path: str) -> None:
    hmp = Raw(hmp_path)
    typed = readline_echo(b"info stat")[:-2]
    # one candidate: completed in place, with a space
    assert hmp.send(b"info stat\t\n") == (typed + L * 9 + b"info status " + K + b"\r\n"
                                          + b"VM status: running\r\n(qemu) ")
    # several: listed in 10-column cells, a new prompt, the line redrawn
    hmp.sock.sendall(b"qom-\t")
    assert hmp.until(b"qom-" + K, 2) == (
        readline_echo(b"qom-")[:-2] + b"\r\nqom-get   qom-list  qom-set   \r\n(qemu) qom-" + K)
    assert hmp.send(b"\x17\n") == L * 4 + K + b"\r\n(qemu) "  # ^W, then an empty line


def test_cr_and_lf_each_end_a_line(hmp_path: str) -> None:
    """readline_handle_byte takes 10 and 13 alike: CRLF runs the line, then an empty one."""
    hmp = Raw(hmp_path)
    assert hmp.send(b"info status\r\n", prompts=2) == (
        readline_echo(b"info status") + b"VM status: running\r\n(qemu) \r\n(qemu) ")


def _screen(echo: bytes) -> bytes:
    """The one line a terminal shows after ``echo`` (cursor moves, erase to end)."""
    line, col = bytearray(), 0
    for token in re.findall(rb"\033\[[CDK]|[^\033]", echo):
        if token == L:
            col = max(0, col - 1)
        elif token == b"\033[C":
            col += 1
        elif token == K:
            del line[col:]
        else:
            line[col:col + 1] = token
            col += 1
    return bytes(line)


def test_long_line_echo_is_bounded_and_shows_the_same_line(hmp_path: str) -> None:
    """Past EXACT_ECHO_BYTES a byte appended at the end is echoed alone (QEMU redraws the
    whole line: 33 MB for 4095 bytes); the terminal shows the same line. A line over 4095
    bytes is refused whole; QEMU would have run its first 4095 bytes."""
    hmp = Raw(hmp_path)
    line = b"x" * 5000
    out = hmp.send(line + b"\n")
    echo, _, rest = out.partition(b"\r\n")
    assert rest == (b"Error: line too long: 5000 bytes (the monitor reads at most 4095 "
                    b"bytes a line); nothing was run\r\n(qemu) ")
    exact = readline_echo(line[:EXACT_ECHO_BYTES])[:-2]
    assert echo.startswith(exact)
    assert echo[len(exact):] == line[EXACT_ECHO_BYTES:MAX_LINE_BYTES]
    assert _screen(echo) == line[:MAX_LINE_BYTES]
    assert hmp.send(b"info status\n").endswith(b"VM status: running\r\n(qemu) ")
    # what QEMU's full redraws show, for a line past the limit (600 bytes: 0.7 MB of echo)
    typed = bytes(range(97, 123)) * 23
    items = list(ReadLine().feed(typed + b"\n"))
    assert items[-1] == typed.decode()
    ours = b"".join(item for item in items if isinstance(item, bytes))
    assert len(ours) < len(readline_echo(typed)) // 2
    assert _screen(ours[:-2]) == _screen(readline_echo(typed)[:-2]) == typed


def test_no_echo_on_stdio(ctx: MonitorContext) -> None:
    out = io.StringIO()
    run_console(ctx, io.StringIO("info status\nquit\n"), out)
    assert out.getvalue() == (BANNER.decode().replace("\r\n", "\n")
                              + "VM status: running\n(qemu) ")


def test_no_echo_in_human_monitor_command(server: MonitorServer, tmp_path: Path) -> None:
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")

    async def run() -> str:
        qmp = QMPClient("echo-test")
        await qmp.connect(path)
        try:
            return str(await qmp.execute("human-monitor-command",
                                         {"command-line": "info status"}))
        finally:
            await qmp.disconnect()

    assert asyncio.run(run()) == "VM status: running\r\n"


def test_cursor_key_storm_is_bounded(hmp_path: str, machine: Machine) -> None:
    """^A/^E on a 4000-byte line: QEMU would send 24 KB of cursor moves per key pair (2.9 GB
    here); a line's echo stops at ECHO_BUDGET, its CRLF and output still come."""
    hmp = Raw(hmp_path)
    storm = b"info status" + b" " * 3989 + b"\x01\x05" * 60_000 + b"\n"
    out = hmp.send(storm)
    assert out.endswith(b"\r\nVM status: running\r\n(qemu) ")
    assert len(out) <= ECHO_BUDGET + 100
    assert hmp.send(b"stop\n").endswith(b"stop" + K + b"\r\n(qemu) ")  # echo is back
    assert machine.runstate == "paused"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_are_handled(data: bytes) -> None:
    readline = ReadLine(completer=lambda before: (["status", "stop"], 0))
    lines = 0
    echoed = 0
    for item in readline.feed(data):
        if isinstance(item, bytes):
            echoed += len(item)
        else:
            lines += 1
            assert isinstance(item, str | Overlong)
        assert len(readline.cmd) <= MAX_LINE_BYTES
    assert echoed <= (lines + 1) * (ECHO_BUDGET + 2)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
               max_size=EXACT_ECHO_BYTES))
def test_typed_lines_echo_exactly_as_qemu(line: str) -> None:
    items = list(ReadLine().feed(line.encode() + b"\n"))
    assert items == [readline_echo(line.encode()), line]
