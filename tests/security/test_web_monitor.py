"""Attack 1: the page's monitor offered every HMP command to any visitor.

``migrate "exec:cat > /etc/passwd"`` replaced that file; ``quit`` closed the visitor's
machine and the pump then logged ~15 tracebacks a second. Now the browser's monitor (JSON API
and Socket.IO) runs the ``VISITOR`` policy, and a machine that dies under its page is
dropped once, with one log line and a clear message to the page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio

from monitor.commands import MonitorContext
from monitor.hmp import COMMANDS, FULL, INFO_COMMANDS, VISITOR, execute
from tests.security.conftest import Visitor
from webapp.live import LiveServer

REFUSED = "not available in the browser monitor"


def test_browser_monitor_cannot_write_a_host_file(server: LiveServer,
                                                  visitor: Callable[[], Visitor],
                                                  tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    before = victim.read_bytes()
    v = visitor()
    v.settled()
    for line in (f'migrate "exec:cat > {victim}"', f'migrate -d "exec:cat > {victim}"',
                 f"  migrate exec:cat>{victim}"):
        out = v.hmp(line)
        assert out == f"{REFUSED}: 'migrate'\n", out
    assert victim.read_bytes() == before
    assert v.get("/api/machine/status").json()["runstate"] == "running"


def test_socket_monitor_cannot_write_a_host_file_or_quit(server: LiveServer,
                                                         visitor: Callable[[], Visitor],
                                                         tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    v = visitor()
    client = socketio.Client(reconnection=False)
    client.connect(server.url, headers={"Cookie": v.cookie}, transports=["websocket"],
                   wait_timeout=10)
    try:
        v.settled()
        answers = [client.call("hmp", {"line": line}, timeout=30) for line in
                   (f'migrate "exec:cat > {victim}"', "quit", "q")]
    finally:
        client.disconnect()
    assert [a["output"] for a in answers] == [
        f"{REFUSED}: 'migrate'\n", f"{REFUSED}: 'quit'\n", f"{REFUSED}: 'q'\n"]
    assert victim.read_text() == "precious\n"
    assert v.get("/api/machine/status").json()["runstate"] == "running"


def test_quit_is_refused_and_the_machine_keeps_running(server: LiveServer,
                                                       visitor: Callable[[], Visitor]) -> None:
    v = visitor()
    v.settled()
    sess = next(iter(server.manager._sessions.values()))
    machine = sess.machine
    assert v.hmp("quit") == f"{REFUSED}: 'quit'\n"
    time.sleep(0.3)
    assert sess.machine is machine and machine is not None
    assert v.hmp("info status") == "VM status: running\n"


def test_help_lists_only_what_the_browser_monitor_offers(server: LiveServer,
                                                          visitor: Callable[[], Visitor]) -> None:
    v = visitor()
    v.settled()
    listed = {line.split(" ", 1)[0] for line in v.hmp("help").splitlines()
              if not line.startswith("\t")}  # qom-set's help has a second line
    offered = {cmd.name for cmd in COMMANDS if cmd.visitor_safe}
    assert listed == offered
    assert not {"migrate", "quit|q"} & listed
    assert {"info", "qom-set", "guest", "system_reset", "x", "xp"} <= listed
    assert v.hmp("help migrate") == ""
    assert v.hmp("? quit") == ""
    infos = v.hmp("info").splitlines()
    assert len(infos) == len(INFO_COMMANDS)  # every info subcommand only reads
    assert v.hmp("info migrate").startswith("globals:")  # reading is fine
    # what is offered still works
    assert v.hmp("info memory-devices").startswith('Memory device [virtio-mem]: "vm0"')


def test_policy_table_marks_host_touching_commands_unsafe() -> None:
    unsafe = {cmd.name for cmd in COMMANDS if not cmd.visitor_safe}
    assert unsafe == {"migrate", "quit|q"}
    assert all(cmd.visitor_safe for cmd in INFO_COMMANDS)
    # the operator's monitors keep every command
    no_machine: MonitorContext = None  # type: ignore[assignment]  # help/refusals need none
    assert "migrate" in execute(no_machine, "help", FULL)
    assert "migrate" not in execute(no_machine, "help", VISITOR)
    assert execute(no_machine, "quit", VISITOR) == f"{REFUSED}: 'quit'\n"
    assert execute(no_machine, "nope", VISITOR) == "unknown command: 'nope'\n"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def session_log() -> Any:
    handler = _Records()
    logger = logging.getLogger("webapp.sessions")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_a_machine_closed_under_its_page_is_dropped_once(server: LiveServer,
                                                         visitor: Callable[[], Visitor],
                                                         session_log: _Records) -> None:
    """What ``quit`` did (it is refused now; the operator or a crash can still close a
    machine): the pump must say so once, not log a traceback every tick."""
    v = visitor()
    closed = threading.Event()
    notices: list[dict[str, Any]] = []
    client = socketio.Client(reconnection=False)

    @client.on("machine_closed")
    def _closed(data: dict[str, Any]) -> None:
        notices.append(data)
        closed.set()

    client.connect(server.url, headers={"Cookie": v.cookie}, transports=["websocket"],
                   wait_timeout=10)
    try:
        v.settled()
        sess = next(iter(server.manager._sessions.values()))
        assert sess.machine is not None
        sess.machine.close()  # under the session's feet, as quit did
        assert closed.wait(5), "the page was not told"
        time.sleep(1.5)  # ~90 pump ticks at 60 Hz
    finally:
        client.disconnect()
    problems = [r for r in session_log.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert problems[0].exc_info is None  # a sentence, no traceback
    assert len(notices) == 1 and "start a new machine" in notices[0]["error"]
    status = v.get("/api/machine/status")
    assert status.status_code == 400 and status.json()["error"] == "this session has no machine"
    # and the page can go on: a new machine
    assert v.post("/api/machine", json={"preset": "default"}).status_code == 200
    assert v.settled()["guest_booted"]
