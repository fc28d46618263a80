"""A QMP server (and HMP-over-socket server) that real QEMU clients can drive.

Protocol as QEMU 7.2 speaks it (``docs/interop/qmp-spec``): the greeting, capabilities
negotiation, ``{"execute": …, "arguments": …, "id": …}`` requests, ``{"return": …, "id": …}``
and ``{"id": …, "error": {"class": …, "desc": …}}`` answers (QEMU puts ``id`` first in errors),
events with QEMU's timestamp object, every message ending in ``\\r\\n``.

The server runs an asyncio loop in its own thread; commands run in worker threads so a slow
command (a migration, a guest workload) never blocks the other clients. Input is split into
JSON values by a streaming splitter like QEMU's ``json-streamer``: garbage is answered with a
``GenericError`` and the client stays connected; a client that does not read its output or
sends an endless value is dropped. Listening is on unix sockets or loopback TCP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from monitor import balloon as b
from monitor import behaviour_model, dimm, extensions, pace
from monitor import commands as c
from monitor import info as mem_info
from monitor import virtio_status as vs
from monitor.commands import MonitorContext, MonitorError
from monitor.hmp_line import Overlong, line_error, too_long
from monitor.hmp_readline import ReadLine
from monitor.qobject_order import qobject

QEMU_VERSION = {"micro": 22, "minor": 2, "major": 7}
PACKAGE = "vmemlab 0.1.0"
GREETING = {"QMP": {"version": {"qemu": QEMU_VERSION, "package": PACKAGE},
                    "capabilities": ["oob"]}}
HMP_BANNER = "QEMU 7.2.22 monitor - type 'help' for more information\r\n"
PROMPT = "(qemu) "
MAX_MESSAGE = 1 << 20  # bytes of one JSON value before the client is answered and reset
MAX_DEPTH = 1024  # QEMU's MAX_NESTING
MAX_OUTPUT = 8 << 20  # unread output before a client is dropped
MAX_CLIENTS = 64  # connections per server beyond this are closed at once


# ------------------------------------------------------------------------------ addresses

@dataclass(frozen=True)
class Address:
    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 0

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


LOOPBACK = {"127.0.0.1", "localhost", ""}


def parse_address(text: str) -> Address:
    """``unix:PATH`` or ``tcp:127.0.0.1:PORT`` (``,server,nowait`` options already removed).

    Raises ``ValueError``: vmemlab listens on unix sockets and the loopback interface only.
    """
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("UNIX socket path is empty")
        return Address("unix", path=path)
    if text.startswith("tcp:"):
        host, sep, port = text[4:].rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"port number missing or invalid in '{text}'")
        if host not in LOOPBACK:
            raise ValueError(f"vmemlab listens only on 127.0.0.1 or unix sockets, not '{host}'")
        return Address("tcp", host="127.0.0.1", port=int(port))
    raise ValueError(f"'{text}' is not a unix: or tcp: address")


# ------------------------------------------------------------------------------ JSON input

class JsonSplitter:
    """Split a byte stream into top-level JSON texts, like QEMU's ``json-streamer``.

    ``feed`` returns ``("json", text)`` for a complete value and ``("error", desc)`` for
    input that can never become one (so the caller answers and goes on).
    """

    def __init__(self, max_size: int = MAX_MESSAGE, max_depth: int = MAX_DEPTH) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self._buf: list[str] = []
        self._size = 0
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._bare = False
        self._skip_to_close = False

    def _reset(self) -> None:
        self._buf, self._size, self._depth = [], 0, 0
        self._in_string = self._escape = self._bare = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for ch in text:
            self._step(ch, out)
        return out

    def _finish_bare(self, out: list[tuple[str, str]]) -> None:
        token = "".join(self._buf)
        self._reset()
        out.append(("json", token))

    def _step(self, ch: str, out: list[tuple[str, str]]) -> None:
        if self._bare:
            if ch in " \t\r\n{}[]\"":
                self._finish_bare(out)
            else:
                self._append(ch, out)
                return
        if self._depth == 0 and not self._in_string:
            if ch in " \t\r\n":
                return
            if ch in "{[":
                self._depth = 1
                self._buf = [ch]
                self._size = 1
            elif ch == '"':
                self._in_string = True
                self._buf = [ch]
                self._size = 1
            elif ch in "}]":
                out.append(("error", "JSON parse error, expecting value"))
            else:
                self._bare = True
                self._buf = [ch]
                self._size = 1
            return
        self._append(ch, out)
        if not self._buf:  # overflowed and reset
            return
        if self._in_string:
            if ch < " ":  # QEMU's lexer: control characters end a string with an error
                self._reset()
                out.append(("error", "JSON parse error, invalid control character in string"))
                return
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_string = False
                if self._depth == 0:
                    text = "".join(self._buf)
                    self._reset()
                    out.append(("json", text))
            return
        if ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._depth += 1
            if self._depth > self.max_depth:
                self._reset()
                out.append(("error", "JSON parse error, too many nested data structures"))
        elif ch in "}]":
            self._depth -= 1
            if self._depth == 0:
                text = "".join(self._buf)
                self._reset()
                out.append(("json", text))

    def _append(self, ch: str, out: list[tuple[str, str]]) -> None:
        self._buf.append(ch)
        self._size += 1
        if self._size > self.max_size:
            self._reset()
            out.append(("error", "JSON parse error, message too long"))

    @property
    def pending(self) -> int:
        return self._size


def decode_message(text: str) -> Any:
    """``json.loads`` with QEMU-style parse errors (raises MonitorError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise MonitorError("JSON parse error, too many nested data structures") from None
    except ValueError as err:
        msg = getattr(err, "msg", str(err))
        if text and text[0] not in '{["' and not text[0].isdigit() and text[0] != "-":
            raise MonitorError(f"JSON parse error, invalid keyword '{text[:64]}'") from None
        raise MonitorError(f"JSON parse error, {msg[:1].lower()}{msg[1:]}") from None


# ------------------------------------------------------------------------------ commands

ArgSpec = dict[str, tuple[str, bool]]  # name -> (type, required)


def _no_args(fn: Callable[[MonitorContext], Any]) -> Callable[[MonitorContext, dict], Any]:
    def run(ctx: MonitorContext, a: dict[str, Any]) -> Any:
        result = fn(ctx)
        return {} if result is None else result
    return run


def _hmc(ctx: MonitorContext, a: dict[str, Any]) -> str:
    from monitor.hmp import execute

    refused = line_error(a["command-line"])
    if refused is not None:
        raise MonitorError(refused)
    return execute(ctx, a["command-line"]).replace("\n", "\r\n")


def _qom_set(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    c.qom_set(ctx, a["path"], a["property"], a["value"])
    return {}


def _migrate(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    c.migrate(ctx, a["uri"])
    return {}


def _balloon(ctx: MonitorContext, a: dict[str, Any]) -> dict[str, Any]:
    b.balloon(ctx, a["value"])
    return {}


def _query_version(ctx: MonitorContext) -> dict[str, Any]:
    return {"qemu": dict(QEMU_VERSION), "package": PACKAGE}


QMP_COMMANDS: dict[str, tuple[ArgSpec, Callable[[MonitorContext, dict[str, Any]], Any]]] = {
    "qmp_capabilities": ({"enable": ("array", False)}, lambda ctx, a: {}),
    "query-commands": ({}, lambda ctx, a: [{"name": name} for name in QMP_COMMANDS]),
    "query-version": ({}, _no_args(_query_version)),
    "query-status": ({}, _no_args(c.query_status)),
    "query-memory-devices": ({}, _no_args(c.query_memory_devices)),
    "query-migrate": ({}, _no_args(c.query_migrate)),
    "qom-get": ({"path": ("str", True), "property": ("str", True)},
                lambda ctx, a: c.qom_get(ctx, a["path"], a["property"])),
    "qom-set": ({"path": ("str", True), "property": ("str", True), "value": ("any", True)},
                _qom_set),
    "qom-list": ({"path": ("str", True)}, lambda ctx, a: c.qom_list(ctx, a["path"])),
    "system_reset": ({}, _no_args(c.system_reset)),
    "stop": ({}, _no_args(c.stop)),
    "cont": ({}, _no_args(c.cont)),
    "quit": ({}, _no_args(c.quit_machine)),
    "migrate": ({"uri": ("str", True), "blk": ("bool", False), "inc": ("bool", False),
                 "detach": ("bool", False), "resume": ("bool", False)}, _migrate),
    "human-monitor-command": ({"command-line": ("str", True), "cpu-index": ("int", False)},
                              _hmc),
    # the machine's memory and its virtio devices (monitor.info, monitor.virtio_status)
    "query-memory-size-summary": ({}, _no_args(mem_info.query_memory_size_summary)),
    "query-memdev": ({}, lambda ctx, a: qobject(mem_info.query_memdev(ctx))),
    "query-events": ({}, _no_args(mem_info.query_events)),
    "x-query-virtio": ({}, lambda ctx, a: qobject(vs.query_virtio(ctx))),
    "x-query-virtio-status": ({"path": ("str", True)},
                              lambda ctx, a: qobject(vs.query_virtio_status(ctx, a["path"]))),
    "balloon": ({"value": ("int", True)}, _balloon),
    "query-balloon": ({}, _no_args(b.query_balloon)),
}
QMP_COMMANDS.update(dimm.QMP)  # object-add, object-del, device_add, device_del, ...
QMP_COMMANDS.update(pace.QMP)  # x-vmemlab-pace, x-vmemlab-step-request (vmemlab's)
QMP_COMMANDS.update(behaviour_model.QMP)  # x-mem-set, x-query-behaviour-model
QMP_COMMANDS.update(extensions.QMP)  # system_wakeup, x-query-virtio-mem-requests, ...
_TYPE_NAMES = {"str": "string", "bool": "boolean", "int": "integer", "array": "array"}


def check_arguments(spec: ArgSpec, args: dict[str, Any]) -> None:
    for name in args:
        if name not in spec and "*" not in spec:  # "*": the command takes any more keys
            raise MonitorError(f"Parameter '{name}' is unexpected")
    for name, (typ, required) in spec.items():
        if name == "*":
            continue
        if name not in args:
            if required:
                raise MonitorError(f"Parameter '{name}' is missing")
            continue
        value = args[name]
        ok = {
            "str": isinstance(value, str),
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "array": isinstance(value, list),
            "any": True,
        }[typ]
        if not ok:
            raise MonitorError(
                f"Invalid parameter type for '{name}', expected: {_TYPE_NAMES[typ]}")


class QmpSession:
    """One client's protocol state: negotiation, request validation, dispatch."""

    def __init__(self, ctx: MonitorContext) -> None:
        self.ctx = ctx
        self.negotiated = False
        self.oob = False

    def prepare(self, msg: Any) -> tuple[Any, Callable[[], Any] | None, dict[str, Any] | None]:
        """Validate one request: (id, work to run, or an immediate error response)."""
        if not isinstance(msg, dict):
            return None, None, error_response(None, MonitorError(
                "QMP input must be a JSON object"))
        has_id = "id" in msg
        ident = msg.get("id")
        try:
            for key in msg:
                if key not in ("execute", "exec-oob", "arguments", "id", "control"):
                    raise MonitorError(f"QMP input member '{key}' is unexpected")
            oob = "exec-oob" in msg
            if oob and (not self.oob or "execute" in msg):
                raise MonitorError("QMP input member 'exec-oob' is unexpected")
            name = msg.get("exec-oob") if oob else msg.get("execute")
            if "execute" not in msg and not oob:
                raise MonitorError("QMP input lacks member 'execute'")
            if not isinstance(name, str):
                raise MonitorError(
                    f"QMP input member '{'exec-oob' if oob else 'execute'}' must be a string")
            args = msg.get("arguments", {})
            if not isinstance(args, dict):
                raise MonitorError("QMP input member 'arguments' must be an object")
            if name not in QMP_COMMANDS:
                if not self.negotiated:
                    raise MonitorError(
                        "Expecting capabilities negotiation with 'qmp_capabilities'",
                        "CommandNotFound")
                raise MonitorError(f"The command {name} has not been found", "CommandNotFound")
            if oob:
                raise MonitorError(f"The command {name} does not support OOB")
            if not self.negotiated and name != "qmp_capabilities":
                raise MonitorError("Expecting capabilities negotiation with 'qmp_capabilities'",
                                   "CommandNotFound")
            if self.negotiated and name == "qmp_capabilities":
                raise MonitorError("Capabilities negotiation is already complete, command "
                                   "ignored", "CommandNotFound")
            spec, fn = QMP_COMMANDS[name]
            check_arguments(spec, args)
            if name == "qmp_capabilities":
                for cap in args.get("enable", []):
                    if cap != "oob":
                        raise MonitorError(f"Capability '{cap}' not available")
                self.oob = "oob" in args.get("enable", [])
                self.negotiated = True
                return ident, None, success_response(has_id, ident, {})
        except MonitorError as err:
            return ident, None, error_response(msg if has_id else None, err)
        ctx = self.ctx
        return ident, (lambda: ctx.run(lambda: fn(ctx, args))), None


def success_response(has_id: bool, ident: Any, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"return": value}
    if has_id:
        out["id"] = ident
    return out


def error_response(msg: dict[str, Any] | None, err: MonitorError) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if msg is not None and "id" in msg:
        out["id"] = msg["id"]
    out["error"] = {"class": err.cls, "desc": err.desc}
    return out


def encode(msg: dict[str, Any]) -> bytes:
    return (json.dumps(msg) + "\r\n").encode()


# ------------------------------------------------------------------------------ server

class MonitorServer:
    """Serves QMP and HMP sockets for one machine from a background asyncio thread."""

    def __init__(self, ctx: MonitorContext, workers: int = 8) -> None:
        self.ctx = ctx
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="monitor")
        self._clients: set[asyncio.StreamWriter] = set()
        self._unix_paths: list[str] = []
        self.addresses: list[tuple[str, Address]] = []  # (protocol, bound address)

    # ---- lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop.run_forever, name="monitor-io",
                                            daemon=True)
            self._thread.start()

    def _run(self, coro: Any) -> Any:
        self.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def listen(self, protocol: str, address: Address | str) -> Address:
        """Listen for ``"qmp"`` or ``"hmp"`` clients; returns the bound address."""
        addr = parse_address(address) if isinstance(address, str) else address
        if protocol not in ("qmp", "hmp"):
            raise ValueError(f"unknown monitor protocol {protocol}")
        bound = self._run(self._listen(protocol, addr))
        self.addresses.append((protocol, bound))
        return bound

    async def _listen(self, protocol: str, addr: Address) -> Address:
        handler = self._qmp_client if protocol == "qmp" else self._hmp_client
        if addr.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(addr.path) and not os.path.isdir(addr.path):
                    os.unlink(addr.path)
            server = await asyncio.start_unix_server(handler, path=addr.path,
                                                     limit=1 << 16)
            self._unix_paths.append(addr.path)
            bound = addr
        else:
            server = await asyncio.start_server(handler, host="127.0.0.1", port=addr.port,
                                                family=socket.AF_INET, limit=1 << 16)
            port = server.sockets[0].getsockname()[1]
            bound = Address("tcp", host="127.0.0.1", port=port)
        self._servers.append(server)
        return bound

    def close(self) -> None:
        if self._thread is None:
            if not self._loop.is_closed():  # never started: close it now, not at exit
                self._loop.close()
                self._executor.shutdown(wait=False)
            return

        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for writer in list(self._clients):
                writer.close()
            self._servers.clear()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)

    # ---- plumbing
    def _write(self, writer: asyncio.StreamWriter, data: bytes) -> bool:
        if writer.is_closing():
            return False
        transport = writer.transport
        if transport.get_write_buffer_size() > MAX_OUTPUT:
            writer.close()  # the client does not read: drop it
            return False
        writer.write(data)
        return True

    async def _call(self, work: Callable[[], Any]) -> Any:
        return await self._loop.run_in_executor(self._executor, work)

    # ---- QMP
    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        if len(self._clients) >= MAX_CLIENTS:
            writer.close()
            return False
        self._clients.add(writer)
        return True

    async def _qmp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            return
        session = QmpSession(self.ctx)
        splitter = JsonSplitter()
        decoder = __import__("codecs").getincrementaldecoder("utf-8")("replace")
        remove_sink: Callable[[], None] | None = None
        loop = self._loop

        def on_event(msg: dict[str, Any]) -> None:
            data = encode(msg)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._write, writer, data)

        try:
            self._write(writer, encode(GREETING))
            while not writer.is_closing():
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for kind, text in splitter.feed(decoder.decode(chunk)):
                    if kind == "error":
                        self._write(writer, encode(error_response(None, MonitorError(text))))
                        continue
                    try:
                        msg = decode_message(text)
                    except MonitorError as err:
                        self._write(writer, encode(error_response(None, err)))
                        continue
                    was_negotiated = session.negotiated
                    ident, work, response = session.prepare(msg)
                    if response is None and work is not None:
                        try:
                            value = await self._call(work)
                            response = success_response("id" in msg, ident, value)
                        except Exception as err:
                            response = error_response(msg, c.describe_error(err))
                    if response is not None:
                        self._write(writer, encode(response))
                    if session.negotiated and not was_negotiated and remove_sink is None:
                        remove_sink = self.ctx.events.add_sink(on_event)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            if remove_sink is not None:
                remove_sink()
            self._clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    # ---- HMP over a socket
    async def _hmp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """QEMU's readline monitor: every typed byte is echoed as QEMU redraws the line
        (``monitor.hmp_readline``); a finished line runs, then its output and the prompt."""
        from monitor.hmp import execute

        if not self._admit(writer):
            return
        rl = ReadLine(PROMPT, completer=self._hmp_completer)
        try:
            self._write(writer, (HMP_BANNER + PROMPT).encode())
            while not writer.is_closing() and not self.ctx.quitting:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                for item in rl.feed(chunk):
                    if isinstance(item, bytes):  # the echo, in pieces: wait for the reader
                        if not self._write(writer, item):
                            break
                        await writer.drain()
                        continue
                    if isinstance(item, Overlong):  # dropped whole: no fragment runs
                        out = f"Error: {too_long(item.size)}\n"
                    else:
                        out = await self._call(functools.partial(execute, self.ctx, item))
                    self._write(writer, out.replace("\n", "\r\n").encode())
                    if self.ctx.quitting:
                        break
                    # the state after Enter is what readline_show_prompt() leaves
                    self._write(writer, PROMPT.encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _hmp_completer(self, before: str) -> tuple[list[str], int]:
        """Tab in the socket monitor: ``monitor.hmp.complete``'s words for the last word."""
        from monitor.hmp import complete

        typing_new = not before or before[-1] in " \t\n\r\v\f"
        current = "" if typing_new else before.split()[-1]
        return complete(self.ctx, before), len(current.encode())
