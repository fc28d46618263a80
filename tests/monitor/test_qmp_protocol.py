"""QMP wire protocol against QEMU 7.2's transcripts, over real sockets, plus robustness:
garbage, several clients, a client that disconnects mid-command, a client that floods."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from emulator import Machine
from monitor.qmp import GREETING, JsonSplitter, MonitorServer, QmpSession, parse_address

from .conftest import readline_echo, wait_settled


class Client:
    """A raw line-oriented QMP client (what QEMU's own test scripts do)."""

    def __init__(self, path: str, negotiate: bool = True) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.events: list[dict] = []
        self.greeting = self.raw_line()
        if negotiate:
            self.send('{"execute": "qmp_capabilities", "id": "c1"}')
            assert self.line() == '{"return": {}, "id": "c1"}'

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def raw_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def line(self, skip_events: bool = True) -> str:
        while True:
            text = self.raw_line().decode().rstrip("\r\n")
            if not (skip_events and text.startswith('{"timestamp"')):
                return text
            self.events.append(json.loads(text))

    def call(self, text: str) -> str:
        self.send(text)
        return self.line()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def qmp_path(server: MonitorServer, tmp_path: Path) -> str:
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")
    return path


def test_greeting_bytes(qmp_path: str) -> None:
    client = Client(qmp_path, negotiate=False)
    assert client.greeting == (
        b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
        b'"package": "vmemlab 0.1.0"}, "capabilities": ["oob"]}}\r\n')
    assert json.loads(client.greeting) == GREETING
    assert client.call('{"execute": "query-status", "id": 1}') == (
        '{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities '
        "negotiation with 'qmp_capabilities'\"}}")
    assert client.call('{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}') == \
        '{"return": {}}'
    assert client.call('{"execute": "qmp_capabilities", "id": "x"}') == (
        '{"id": "x", "error": {"class": "CommandNotFound", "desc": "Capabilities negotiation '
        'is already complete, command ignored"}}')
    client.close()


# 02b: (request, exact response)
QOM_ERRORS = [
    ('{"execute": "qom-set", "arguments": {"path": "vm0", "property": "requested-size", '
     '"value": 3145728}, "id": "c8"}',
     '{"id": "c8", "error": {"class": "GenericError", "desc": "\'requested-size\' has to be '
     "multiples of 'block-size' (0x200000)\"}}"),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size", "value": 3221225472}, "id": "c9"}',
     '{"id": "c9", "error": {"class": "GenericError", "desc": "\'requested-size\' cannot '
     'exceed the memory backend size(0x80000000)"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size", "value": -1}, "id": "c10"}',
     '{"id": "c10", "error": {"class": "GenericError", "desc": "\'requested-size\' has to be '
     "multiples of 'block-size' (0x200000)\"}}"),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size", "value": "1G"}, "id": "c11"}',
     '{"id": "c11", "error": {"class": "GenericError", "desc": "Parameter \'requested-size\' '
     'expects uint64"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size", "value": 1.5}, "id": "c12"}',
     '{"id": "c12", "error": {"class": "GenericError", "desc": "Parameter \'requested-size\' '
     'expects uint64"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size", "value": null}, "id": "c13"}',
     '{"id": "c13", "error": {"class": "GenericError", "desc": "Parameter \'requested-size\' '
     'expects uint64"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "vm9", "property": "requested-size", '
     '"value": 1073741824}, "id": "c14"}',
     '{"id": "c14", "error": {"class": "DeviceNotFound", "desc": "Device \'vm9\' not found"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm9", "property": '
     '"requested-size", "value": 1073741824}, "id": "c15"}',
     '{"id": "c15", "error": {"class": "DeviceNotFound", "desc": "Device '
     '\'/machine/peripheral/vm9\' not found"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"foo", "value": 1073741824}, "id": "c16"}',
     '{"id": "c16", "error": {"class": "GenericError", "desc": "Property '
     '\'virtio-mem-pci.foo\' not found"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"size", "value": 1073741824}, "id": "c17"}',
     '{"id": "c17", "error": {"class": "GenericError", "desc": "Property \'virtio-mem.size\' '
     'is not writable"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"block-size", "value": 4194304}, "id": "c18"}',
     '{"id": "c18", "error": {"class": "GenericError", "desc": "\'block-size\' cannot be '
     'changed"}}'),
    ('{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size"}, "id": "c19"}',
     '{"id": "c19", "error": {"class": "GenericError", "desc": "Parameter \'value\' is '
     'missing"}}'),
    ('{"execute": "qom-get", "arguments": {"path": "vm9", "property": "size"}, "id": "c20"}',
     '{"id": "c20", "error": {"class": "DeviceNotFound", "desc": "Device \'vm9\' not found"}}'),
    ('{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"foo"}, "id": "c21"}',
     '{"id": "c21", "error": {"class": "GenericError", "desc": "Property '
     '\'virtio-mem-pci.foo\' not found"}}'),
    ('{"execute": "device_del", "arguments": {"id": "vm0"}, "id": "c22"}',
     '{"id": "c22", "error": {"class": "GenericError", "desc": "Bus \'pcie.0\' does not '
     'support hotplugging"}}'),
    ('{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0", "property": '
     '"requested-size"}, "id": "c23"}', '{"return": 536870912, "id": "c23"}'),
]


def test_qom_errors_byte_for_byte(qmp_path: str) -> None:
    client = Client(qmp_path)
    for request, response in QOM_ERRORS:
        assert client.call(request) == response, request
    client.close()


def test_queries(qmp_path: str, machine: Machine) -> None:
    client = Client(qmp_path)
    assert client.call('{"execute": "query-memory-devices", "id": "c3"}') == (
        '{"return": [{"type": "virtio-mem", "data": {"memdev": "/objects/mem0", "memaddr": '
        '4294967296, "block-size": 2097152, "size": 536870912, "node": 0, "max-size": '
        '2147483648, "requested-size": 536870912, "id": "vm0"}}], "id": "c3"}')
    assert client.call('{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0",'
                       ' "property": "size"}, "id": "c4"}') == '{"return": 536870912, "id": "c4"}'
    assert client.call('{"execute": "query-status"}') == (
        '{"return": {"status": "running", "singlestep": false, "running": true}}')
    listing = json.loads(client.call('{"execute": "qom-list", "arguments": '
                                     '{"path": "/machine/peripheral/vm0"}}'))["return"]
    assert {"name": "requested-size", "type": "size"} in listing
    assert client.call('{"execute": "human-monitor-command", "arguments": '
                       '{"command-line": "info status"}, "id": 7}') == \
        '{"return": "VM status: running\\r\\n", "id": 7}'
    names = {c["name"] for c in json.loads(client.call('{"execute": "query-commands"}'))["return"]}
    assert {"qom-get", "qom-set", "qom-list", "query-memory-devices", "query-status", "quit",
            "system_reset", "stop", "cont", "migrate", "query-migrate",
            "human-monitor-command", "query-commands", "qmp_capabilities"} <= names
    assert client.call('{"execute": "query-migrate"}') == '{"return": {}}'
    assert client.call('{"execute": "frob", "id": 2}') == (
        '{"id": 2, "error": {"class": "CommandNotFound", "desc": "The command frob has not '
        'been found"}}')
    assert client.call('{"execute": "stop"}') == '{"return": {}}'
    time.sleep(0.1)
    client.call('{"execute": "query-status"}')
    assert [e["event"] for e in client.events] == ["STOP"]
    assert client.call('{"execute": "query-status"}') == (
        '{"return": {"status": "paused", "singlestep": false, "running": false}}')
    assert client.call('{"execute": "cont"}') == '{"return": {}}'
    time.sleep(0.1)
    client.call('{"execute": "query-status"}')
    assert [e["event"] for e in client.events] == ["STOP", "RESUME"]
    assert set(client.events[0]) == {"timestamp", "event"}
    assert set(client.events[0]["timestamp"]) == {"seconds", "microseconds"}
    client.close()


@pytest.mark.parametrize(("sent", "answer"), [
    ("foo", "JSON parse error, invalid keyword 'foo'"),
    ("[1, 2]", "QMP input must be a JSON object"),
    ("42", "QMP input must be a JSON object"),
    ('"text"', "QMP input must be a JSON object"),
    ("}", "JSON parse error, expecting value"),
    ('{"execute": 1}', "QMP input member 'execute' must be a string"),
    ('{"arguments": {}}', "QMP input lacks member 'execute'"),
    ('{"execute": "query-status", "foo": 1}', "QMP input member 'foo' is unexpected"),
    ('{"execute": "query-status", "arguments": []}',
     "QMP input member 'arguments' must be an object"),
    ('{"execute": "qom-get", "arguments": {"path": 1, "property": "size"}}',
     "Invalid parameter type for 'path', expected: string"),
    ('{"execute": "qom-get", "arguments": {"path": "vm0", "property": "size", "x": 1}}',
     "Parameter 'x' is unexpected"),
    ('{"execute": "query-status", "arguments": {"a": }}', None),
])
def test_garbage_is_answered(qmp_path: str, sent: str, answer: str | None) -> None:
    client = Client(qmp_path)
    reply = json.loads(client.call(sent))
    assert reply["error"]["class"] == "GenericError"
    if answer is not None:
        assert reply["error"]["desc"] == answer
    else:
        assert reply["error"]["desc"].startswith("JSON parse error")
    # still connected and working
    assert client.call('{"execute": "query-status", "id": 9}').endswith('"id": 9}')
    client.close()


def test_split_and_batched_input(qmp_path: str) -> None:
    client = Client(qmp_path)
    client.sock.sendall(b'{"execute": "query-')
    time.sleep(0.05)
    client.sock.sendall(b'status", "id": 1}{"execute": "query-status", "id": 2} ')
    assert client.line().endswith('"id": 1}') and client.line().endswith('"id": 2}')
    client.sock.sendall(b"[" * 2000 + b"\n")
    assert "too many nested" in client.line()
    client.sock.sendall(b'{"execute": "qom-get", "id": "' + b"x" * (1 << 20) + b'"}\n')
    assert "message too long" in client.line()
    client.sock.sendall(b'"}\n')  # the tail of the long message is garbage now
    while True:
        line = client.call('{"execute": "query-status", "id": 3}')
        if line.endswith('"id": 3}'):
            break
    client.close()


def test_many_clients_and_misbehaviour(qmp_path: str, machine: Machine) -> None:
    good = [Client(qmp_path) for _ in range(3)]
    # a client that starts a slow command and disconnects before the answer
    rude = Client(qmp_path)
    rude.send('{"execute": "human-monitor-command", "arguments": {"command-line": '
              '"guest alloc 256M"}}')
    rude.close()
    # a client that floods without reading its answers
    flood = Client(qmp_path)
    payload = b'{"execute": "query-status"}\n' * 20000
    sender = threading.Thread(target=lambda: _try_send(flood.sock, payload), daemon=True)
    sender.start()
    # a client that sends binary garbage and leaves
    junk = socket.socket(socket.AF_UNIX)
    junk.connect(qmp_path)
    junk.sendall(bytes(range(256)) * 64)
    junk.close()
    t0 = time.monotonic()
    for i, client in enumerate(good):
        assert client.call(f'{{"execute": "query-status", "id": {i}}}').endswith(f'"id": {i}}}')
    assert time.monotonic() - t0 < 5
    assert machine.runstate == "running"
    flood.close()
    for client in good:
        assert client.call('{"execute": "qom-get", "arguments": {"path": "vm0", "property": '
                           '"requested-size"}}') == '{"return": 536870912}'
        client.close()
    wait_settled(machine)


def _try_send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def test_session_unit() -> None:
    session = QmpSession(None)  # type: ignore[arg-type]  # prepare() needs no machine
    _, work, resp = session.prepare({"execute": "qmp_capabilities", "id": 1})
    assert work is None and resp == {"return": {}, "id": 1}
    _, work, resp = session.prepare({"exec-oob": "query-status", "id": 2})
    assert resp == {"id": 2, "error": {"class": "GenericError",
                                       "desc": "QMP input member 'exec-oob' is unexpected"}}


def test_splitter_unit() -> None:
    s = JsonSplitter()
    assert s.feed('{"a": "}"}  [1,[2]] abc {') == [("json", '{"a": "}"}'), ("json", "[1,[2]]"),
                                                    ("json", "abc")]
    assert s.feed('"x": "\\""}') == [("json", '{"x": "\\""}')]


def test_addresses_loopback_only() -> None:
    assert str(parse_address("tcp:localhost:4444")) == "tcp:127.0.0.1:4444"
    assert str(parse_address("unix:/tmp/q")) == "unix:/tmp/q"
    for bad in ("tcp:0.0.0.0:1", "tcp:10.0.0.1:1", "tcp:example.com:1", "tcp:1", "udp:1"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_tcp_listener_is_loopback(server: MonitorServer) -> None:
    bound = server.listen("qmp", "tcp:127.0.0.1:0")
    sock = socket.create_connection(("127.0.0.1", bound.port), timeout=5)
    assert sock.recv(100).startswith(b'{"QMP"')
    sock.close()


def test_hmp_socket(server: MonitorServer, tmp_path: Path) -> None:
    path = str(tmp_path / "hmp.sock")
    server.listen("hmp", f"unix:{path}")
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    buf = b""
    while not buf.endswith(b"(qemu) "):
        buf += sock.recv(4096)
    assert buf == b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "
    sock.sendall(b"info status\n")
    buf = b""
    while not buf.endswith(b"(qemu) "):
        buf += sock.recv(4096)
    assert buf == readline_echo(b"info status") + b"VM status: running\r\n(qemu) "
    sock.close()


def test_qmp_migrate(qmp_path: str, tmp_path: Path) -> None:
    client = Client(qmp_path)
    img = tmp_path / "vm.img"
    assert client.call(json.dumps({"execute": "migrate", "arguments": {
        "uri": f"exec:cat > {img}"}, "id": "m"})) == '{"return": {}, "id": "m"}'
    reply = json.loads(client.call('{"execute": "query-migrate"}'))["return"]
    assert reply["status"] == "completed"
    assert list(reply) == ["status", "setup-time", "downtime", "total-time", "ram"]
    ram = reply["ram"]
    assert ram["total"] == (1 << 30) + (2 << 30) and ram["remaining"] == 0
    assert 0 < ram["transferred"] < 600 << 20  # only plugged, non-zero pages travel
    assert ram["normal"] == ram["transferred"] // 4096
    assert client.call('{"execute": "query-status"}') == (
        '{"return": {"status": "postmigrate", "singlestep": false, "running": false}}')
    assert [e["event"] for e in client.events] == ["STOP"]
    assert json.loads(client.call('{"execute": "migrate", "arguments": {"uri": "tcp:1:2"}}')
                      )["error"]["desc"] == "unknown migration protocol: tcp"
    client.close()
