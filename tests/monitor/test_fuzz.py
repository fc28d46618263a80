"""Property-based fuzzing: every HMP line and every QMP byte stream gets an answer or a clean
disconnect -- never a traceback, never a disturbed machine."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import Machine
from monitor import run_hmp
from monitor.commands import MonitorContext
from monitor.hmp import COMMANDS, INFO_COMMANDS, complete
from monitor.qmp import JsonSplitter, MonitorServer, QmpSession, decode_message

SAFE = [n for cmd in COMMANDS for n in cmd.names
        if n not in ("quit", "q", "cont", "c", "migrate", "guest", "system_reset")]
WORDS = st.sampled_from(["vm0", "vm9", "/machine/peripheral/vm0", "mem0", "requested-size",
                         "size", "block-size", "-j", '"', "''", "0x200000", "1G", "-1",
                         "/4xg", "0x40000000", "info", "\\", "virtio-backend", "{", "null"])
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def paused(machine: Machine, ctx: MonitorContext) -> Machine:
    machine.pause()  # guest commands fail fast; nothing the fuzzer types can wait on the guest
    return machine


@FUZZ
@given(st.sampled_from(SAFE + ["info " + n for c in INFO_COMMANDS for n in c.names]),
       st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=5))
def test_hmp_commands_never_crash(paused: Machine, name: str, words: list[str]) -> None:
    line = " ".join([name, *words])
    out = run_hmp(paused, line)
    assert isinstance(out, str)
    assert "Traceback" not in out and "internal error" not in out, (line, out)
    assert paused.runstate in ("paused", "running")


@FUZZ
@given(st.text(max_size=80))
def test_hmp_any_text(paused: Machine, line: str) -> None:
    if line.strip().split(" ")[0] in ("quit", "q", "cont", "c", "migrate", "guest"):
        return
    out = run_hmp(paused, line)
    assert isinstance(out, str) and "Traceback" not in out
    assert isinstance(complete(None, line), list)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=40),
                          st.sampled_from(['{"execute": "query-status"}', "{", "}", "[", "]",
                                           '"', "\\", '{"execute":', '"qmp_capabilities"}',
                                           '{"id": [1, {"a": null}]}', "1e999", "-", "nul"])),
                max_size=12))
def test_qmp_reader_answers_everything(chunks: list[str]) -> None:
    splitter = JsonSplitter(max_size=4096, max_depth=32)
    session = QmpSession(None)  # type: ignore[arg-type]  # prepare() needs no machine
    for chunk in chunks:
        for kind, text in splitter.feed(chunk):
            if kind == "error":
                assert text.startswith("JSON parse error")
                continue
            try:
                msg = decode_message(text)
            except Exception as err:
                assert getattr(err, "cls", None) == "GenericError"
                continue
            _, work, response = session.prepare(msg)
            assert (work is None) != (response is None)
            if response is not None:
                json.dumps(response)
    assert splitter.pending <= 4096


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2048))
def test_qmp_socket_fuzz(server_path: tuple[MonitorServer, str], data: bytes) -> None:
    _, path = server_path
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    sock.recv(4096)  # greeting
    sock.sendall(b'{"execute": "qmp_capabilities"}\n' + data)
    sock.sendall(b'\n}\n{"execute": "query-status", "id": "end"}\n')
    sock.shutdown(socket.SHUT_WR)  # unbalanced input may still wait for more: end it here
    buf = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the server answered what it could and closed cleanly
            buf += chunk
    finally:
        sock.close()
    for line in buf.split(b"\r\n"):
        if line:
            reply = json.loads(line)
            assert "return" in reply or "error" in reply or "event" in reply
    # the server still serves a well-behaved client
    ok = socket.socket(socket.AF_UNIX)
    ok.settimeout(5)
    ok.connect(path)
    ok.recv(4096)
    ok.sendall(b'{"execute": "qmp_capabilities", "id": 1}\n')
    assert ok.recv(4096).startswith(b'{"return": {}, "id": 1}')
    ok.close()


@pytest.fixture
def server_path(server: MonitorServer, tmp_path: Path) -> tuple[MonitorServer, str]:
    path = str(tmp_path / "fuzz.sock")
    server.listen("qmp", f"unix:{path}")
    return server, path
