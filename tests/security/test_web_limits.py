"""Attack 4: small uploads that cost gigabytes, a share store anyone fills, unbounded guests.

Four 400 MB *chunked* JSON bodies skipped the 8 MiB check (2 GB RSS); anyone filled the 1 GiB
share store in 17 s and it then refused everyone forever; one anonymous session reached
7.4 GB RSS. Each test repeats the attack against a live server and bounds what it costs,
measured here with generous margins.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio

from emulator.config import MiB
from tests.security.conftest import Visitor, rss
from webapp.live import LiveServer

HEADER = {"format": "vmemlab-recording", "version": 1, "title": "flood",
          "machines": {"main": {"config": {"devices": []}}}}


def recording(size: int) -> bytes:
    """A valid recording of about ``size`` bytes (a header and padding markers)."""
    lines = [json.dumps(HEADER)]
    pad = "x" * 1000
    while sum(len(x) + 1 for x in lines) < size:
        lines.append(json.dumps({"t": 0.0, "type": "marker", "marker": "pad", "pad": pad}))
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------ chunked bodies

def _chunked_post(port: int, path: str, cookie: str, token: str, total: int,
                  content_type: str = "application/json") -> tuple[int, str]:
    """Stream ``total`` bytes as a chunked body until the server answers; (sent, status)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            f"Cookie: {cookie}\r\nX-CSRFToken: {token}\r\n\r\n")
    chunk = b"[" + b"0," * ((1 << 20) // 2 - 1)  # 1 MiB of one long JSON list
    piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, answer = 0, b""
    try:
        sock.sendall(head.encode())
        while sent < total:
            sock.sendall(piece)
            sent += len(chunk)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # nothing yet: keep sending
                answer = sock.recv(4096)
            sock.setblocking(True)
            if answer:
                break
        if not answer:
            sock.sendall(b"0\r\n\r\n")
        while b"\r\n" not in answer:
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection on us: it stopped reading
    finally:
        sock.close()
    return sent, answer.split(b"\r\n", 1)[0].decode(errors="replace")


@pytest.mark.parametrize("path", ["/share", "/api/machine/hmp"])
def test_four_400_mb_chunked_bodies_cost_little(server: LiveServer,
                                                visitor: Callable[[], Visitor],
                                                path: str) -> None:
    v = visitor()
    before = rss()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results: list[tuple[int, str]] = []
    t0 = time.monotonic()
    attackers = [threading.Thread(target=lambda: results.append(
        _chunked_post(server.port, path, v.cookie, v.token, 400 << 20))) for _ in range(4)]
    for t in attackers:
        t.start()
    for t in attackers:
        t.join(120)
    elapsed = time.monotonic() - t0
    done.set()
    watcher.join()
    assert len(results) == 4
    for sent, status in results:
        assert status.startswith("HTTP/1.1 413"), status
        assert sent < 64 << 20, sent  # refused long before 400 MB went over the wire
    assert peak[0] - before < 200 << 20, (peak[0] - before) >> 20
    assert elapsed < 60
    # the server still answers
    assert v.get("/healthz").status_code == 200


def test_a_state_upload_over_its_cap_is_refused_while_streaming(
        serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_MAX_STATE_BYTES=4 << 20)
    v = Visitor(server)
    sent, status = _chunked_post(server.port, "/api/machine/state", v.cookie, v.token,
                                 64 << 20, content_type="multipart/form-data; boundary=x")
    assert status.startswith("HTTP/1.1 413"), status
    assert sent < 32 << 20


# ------------------------------------------------------------------ share flood

def _share(port: int, data: bytes, cookie: str, token: str, source: str = "127.0.0.1"
           ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /share from ``source`` (another loopback address is another client)."""
    boundary = "vmemlabboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"r.ndjson\"\r\nContent-Type: application/x-ndjson\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/share", body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Cookie": cookie,
            "X-CSRFToken": token})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read()), dict(answer.getheaders())
    finally:
        conn.close()


def test_one_client_cannot_fill_the_share_store(serve: Callable[..., LiveServer],
                                                tmp_path: Path) -> None:
    server = serve(VMEMLAB_SHARE_DIR=str(tmp_path))
    v = Visitor(server)
    data = recording(1 << 20)
    statuses = []
    t0 = time.monotonic()
    for _ in range(40):  # the attacker's loop
        status, body, headers = _share(server.port, data, v.cookie, v.token)
        statuses.append(status)
        if status == 429:
            assert "too many shared files from your address" in body["error"]
            assert int(headers["Retry-After"]) > 0
    assert time.monotonic() - t0 < 60
    assert statuses[:20] == [200] * 20 and set(statuses[20:]) == {429}
    stored = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert stored <= 20 * len(data)
    # another client (another address) still shares
    status, body, _ = _share(server.port, recording(10_000), v.cookie, v.token, "127.0.0.2")
    assert status == 200, body


def test_shared_bytes_per_client_are_limited(serve: Callable[..., LiveServer],
                                             tmp_path: Path) -> None:
    server = serve(VMEMLAB_SHARE_DIR=str(tmp_path),
                   VMEMLAB_RATELIMIT_SHARE_BYTES=f"{3 << 20} per hour")
    v = Visitor(server)
    data = recording(1 << 20)
    answers = [_share(server.port, data, v.cookie, v.token)[:2] for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 429, 429] or \
        [a[0] for a in answers] == [200, 200, 200, 429]
    assert "too many shared bytes" in answers[-1][1]["error"]


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_shares_expire_and_make_room_oldest_first(serve: Callable[..., LiveServer],
                                                  tmp_path: Path) -> None:
    data = recording(1 << 20)
    server = serve(VMEMLAB_SHARE_DIR=str(tmp_path), VMEMLAB_SHARE_MAX_TOTAL=3 * len(data),
                   VMEMLAB_SHARE_TTL=3600.0)
    v = Visitor(server)
    ids = []
    for _ in range(3):
        status, body, _ = _share(server.port, data, v.cookie, v.token)
        assert status == 200, body
        ids.append(body["id"])
    # full, nothing expired: a clear 507, never forever
    status, body, _ = _share(server.port, data, v.cookie, v.token)
    assert status == 507
    assert "share store is full" in body["error"] and "expire after 1 h" in body["error"]
    # the two oldest expire; a new share removes only what it needs, oldest first
    _age(tmp_path / f"{ids[0]}.ndjson", 7300)
    _age(tmp_path / f"{ids[1]}.ndjson", 7200)
    status, body, _ = _share(server.port, data, v.cookie, v.token)
    assert status == 200, body
    assert not (tmp_path / f"{ids[0]}.ndjson").exists()
    assert (tmp_path / f"{ids[1]}.ndjson").exists()  # expired but not needed yet
    # an expired share is gone when asked for
    assert v.get(f"/s/{ids[1]}").status_code == 404
    assert v.get(f"/shared/{ids[1]}.ndjson").status_code == 404
    assert not (tmp_path / f"{ids[1]}.ndjson").exists()
    # and the pump's chore sweeps the rest without anyone asking
    _age(tmp_path / f"{ids[2]}.ndjson", 7200)
    server.manager.settings.chore_interval = 0.05
    server.manager.ensure_pump()
    deadline = time.monotonic() + 5
    while (tmp_path / f"{ids[2]}.ndjson").exists():
        assert time.monotonic() < deadline, "the janitor did not sweep"
        time.sleep(0.05)
    assert (tmp_path / f"{body['id']}.ndjson").exists()  # the live one stays


# ------------------------------------------------------------------ memory budget

def _alloc(v: Visitor, size_mib: int) -> Any:
    return v.post("/api/machine/guest", json={"action": "alloc", "size": size_mib})


def test_one_session_cannot_take_more_than_the_memory_budget(
        serve: Callable[..., LiveServer]) -> None:
    """The 7.4 GB session, scaled down: a 320 MiB budget, allocations until refused."""
    budget = 320 * MiB
    server = serve(VMEMLAB_MAX_RESIDENT=budget)
    v = Visitor(server)
    v.settled()
    before = rss()
    for dev in ("vm0", "vm1"):
        assert v.post("/api/machine/requested-size",
                      json={"device": dev, "size": "256M"}).status_code == 200
    v.settled()
    answers = [_alloc(v, 64) for _ in range(8)]
    codes = [a.status_code for a in answers]
    assert codes[:4] == [200] * 4 and set(codes[5:]) == {429}, codes
    refusal = answers[-1].json()["error"]
    assert refusal.startswith("the server's memory budget is used up (")
    assert "of 320 MiB resident" in refusal and refusal.endswith("free something or try later")
    grown = rss() - before
    assert grown < budget + (100 << 20), grown >> 20
    health = v.get("/healthz").json()
    assert health["max_resident"] == budget and 256 * MiB <= health["resident"] <= budget
    # the monitor's allocations obey the same budget
    out = v.hmp("guest alloc 64M")
    assert out.startswith("Error: the server's memory budget is used up"), out


def test_nothing_grows_once_the_budget_is_used_up(serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_MAX_RESIDENT=1 << 30)
    v = Visitor(server)
    v.settled()
    assert _alloc(v, 48).status_code == 200
    server.manager.settings.max_resident = 32 * MiB  # the other guests grew meanwhile
    refused = "the server's memory budget is used up"
    grow = v.post("/api/machine/requested-size", json={"device": "vm0", "size": "128M"})
    assert grow.status_code == 429 and grow.json()["error"].startswith(refused)
    assert v.hmp("virtio-mem vm0 128").startswith(f"Error: {refused}")
    assert v.hmp("qom-set vm0 requested-size 128M").startswith(f"Error: {refused}")
    assert v.hmp("qom-set -j vm0 requested-size 134217728").startswith(f"Error: {refused}")
    assert v.hmp("guest pin 1M").startswith(f"Error: {refused}")
    assert _alloc(v, 1).status_code == 429
    # shrinking is what frees memory: always allowed
    assert v.post("/api/machine/requested-size",
                  json={"device": "vm0", "size": "32M"}).status_code == 200
    assert v.hmp("virtio-mem vm1 16") == ""
    # a new visitor gets no machine, over HTTP or a socket
    other = Visitor(server)
    answer = other.get("/api/machine/status")
    assert answer.status_code == 429 and answer.json()["error"].startswith(refused)
    errors: list[str] = []
    got = threading.Event()
    client = socketio.Client(reconnection=False)

    def on_server_error(data: dict[str, str]) -> None:
        errors.append(data["error"])
        got.set()

    client.on("server_error", on_server_error)
    client.connect(server.url, headers={"Cookie": other.cookie}, transports=["websocket"],
                   wait_timeout=10)
    try:
        assert got.wait(5) and errors[0].startswith(refused)
    finally:
        client.disconnect()
    assert len(server.manager) == 1
    # replacing one's own machine frees its memory, so it is allowed
    assert v.post("/api/machine", json={"preset": "default"}).status_code == 200


def test_one_machine_cannot_grow_past_its_own_budget(serve: Callable[..., LiveServer]) -> None:
    """A per-machine budget: one student stops at it with a clear message, the others go on,
    and the page gets the numbers in its keyframe and views."""
    budget = 160 * MiB
    server = serve(VMEMLAB_MAX_MACHINE_RESIDENT=budget, VMEMLAB_MAX_RESIDENT=4 << 30)
    greedy, other = Visitor(server), Visitor(server)
    greedy.settled()
    other.settled()
    assert greedy.post("/api/machine/requested-size",
                       json={"device": "vm0", "size": "256M"}).status_code == 200
    greedy.settled()
    answers = [_alloc(greedy, 48) for _ in range(5)]
    codes = [a.status_code for a in answers]
    first_refusal = codes.index(429) if 429 in codes else len(codes)
    assert first_refusal >= 2 and set(codes[first_refusal:]) == {429}, codes
    refusal = answers[-1].json()["error"]
    assert refusal.startswith("this machine's memory budget is used up (")
    assert "of 160 MiB resident, 48 MiB more asked for" in refusal
    assert refusal.endswith("unplug memory to give some back (free allocations, then shrink "
                            "a device)")
    out = greedy.hmp("guest alloc 48M")
    assert out.startswith("Error: this machine's memory budget is used up"), out
    # the server is far from its own budget: another machine still grows
    assert _alloc(other, 48).status_code == 200
    deadline = time.monotonic() + 10
    while greedy.get("/healthz").json()["resident"] < budget - 48 * MiB + 48 * MiB:
        assert time.monotonic() < deadline, "the sampler never measured the other machine"
        time.sleep(0.05)
    # the page's numbers: this machine near its budget, the server's total above it
    frames: list[dict[str, Any]] = []
    got = threading.Event()
    client = socketio.Client(reconnection=False)

    def on_keyframe(data: dict[str, Any]) -> None:
        frames.append(data)
        got.set()

    client.on("keyframe", on_keyframe)
    client.on("view", lambda data: frames.append(data))
    client.connect(server.url, headers={"Cookie": greedy.cookie}, transports=["websocket"],
                   wait_timeout=10)
    try:
        assert got.wait(10)
        numbers = frames[0]["budget"]
        assert numbers["machine_limit"] == budget and numbers["server_limit"] == 4 << 30
        assert budget - 48 * MiB < numbers["resident"] <= budget
        assert numbers["server_resident"] >= numbers["resident"] + 40 * MiB
        greedy.post("/api/machine/requested-size", json={"device": "vm0", "size": "192M"})
        deadline = time.monotonic() + 10
        while not any("budget" in f and f is not frames[0] for f in frames):
            assert time.monotonic() < deadline, "no view after a change"
            time.sleep(0.05)
        view = next(f for f in frames[1:] if "budget" in f)
        assert view["budget"]["machine_limit"] == budget
    finally:
        client.disconnect()
    # freeing and unplugging gives memory back, and makes room again
    for answer in answers[:first_refusal]:
        assert greedy.post("/api/machine/guest", json={"action": "free",
                                                       "id": answer.json()["id"]}
                           ).status_code == 200
    for dev in ("vm0", "vm1"):
        assert greedy.post("/api/machine/requested-size",
                           json={"device": dev, "size": 0}).status_code == 200
    greedy.settled()
    assert _alloc(greedy, 32).status_code == 200
    # a used-up budget refuses a larger requested-size too (a smaller one stays allowed)
    assert greedy.hmp("virtio-mem vm1 64") == ""
    server.manager.settings.max_machine_resident = 32 * MiB
    assert greedy.hmp("virtio-mem vm1 128").startswith(
        "Error: this machine's memory budget is used up")
    assert greedy.hmp("virtio-mem vm1 16") == ""
