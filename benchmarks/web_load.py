"""Workshop load: many browser sessions, each with its own machine, on one server.

Real Socket.IO clients (python-socketio over WebSocket, each with its own cookie and so its
own machine) connect to a live server, wait for their keyframe, then issue commands
(``set_requested_size``, alternating sizes so the guests really plug and unplug, plus pings)
with a short think time, measuring each command's round trip (emit → acknowledgement).
The baseline is the same loop with one client in the same run; the result is p95 round trip
with ``CLIENTS`` sessions and its ratio to the baseline.

One JSON object per result on stdout (``python -m benchmarks.web_load``).
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from typing import Any

from webapp.live import LiveServer

CLIENTS = 32
COMMANDS = 20
THINK = (0.05, 0.25)  # seconds between a user's commands
MiB = 1024 * 1024


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _session(url: str, results: list[float], errors: list[str], events: list[int],
             start: threading.Barrier | None, seed: int) -> None:
    import requests
    import socketio

    rng = random.Random(seed)
    http = requests.Session()
    http.get(url + "/", timeout=30).raise_for_status()
    cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
    client = socketio.Client(reconnection=False)
    got_keyframe = threading.Event()
    counter = [0]
    client.on("keyframe", lambda data: got_keyframe.set())
    client.on("batch", lambda data: counter.__setitem__(0, counter[0] + len(data["events"])))
    try:
        client.connect(url, headers={"Cookie": cookie}, transports=["websocket"],
                       wait_timeout=30)
        if not got_keyframe.wait(30):
            errors.append("no keyframe")
            return
        if start is not None:
            start.wait(60)
        for i in range(COMMANDS):
            time.sleep(rng.uniform(*THINK))
            if i % 4 == 3:
                event, data = "ping_vmem", {}
            else:
                size = (128 + 2 * rng.randrange(0, 64)) * MiB
                event, data = "set_requested_size", {"device": f"vm{i % 2}", "size": size}
            t0 = time.perf_counter()
            answer = client.call(event, data, timeout=30)
            results.append((time.perf_counter() - t0) * 1000)
            if not answer or not answer.get("ok"):
                errors.append(str(answer))
    except Exception as exc:  # report, don't hide: the benchmark row says ok: false
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        events.append(counter[0])
        client.disconnect()


def _round(url: str, clients: int) -> tuple[list[float], list[str], int, float]:
    results: list[float] = []
    errors: list[str] = []
    events: list[int] = []
    barrier = threading.Barrier(clients) if clients > 1 else None
    threads = [threading.Thread(target=_session, args=(url, results, errors, events, barrier, n))
               for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results, errors, sum(events), time.perf_counter() - t0


def run() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with LiveServer({"VMEMLAB_MAX_MACHINES": CLIENTS + 8}) as server:
        base, base_err, _, _ = _round(server.url, 1)
        server.manager.close_sessions()
        load, load_err, events, secs = _round(server.url, CLIENTS)
        machines = server.manager.stats()["machines"]
    base_p95 = _pct(base, 0.95)
    p95 = _pct(load, 0.95)
    out.append({
        "bench": f"web_load_{CLIENTS}_sessions_command_rtt_p95", "unit": "ms",
        "value": round(p95, 1), "p50": round(_pct(load, 0.5), 1),
        "max": round(max(load), 1) if load else None, "commands": len(load),
        "baseline": round(base_p95, 1), "baseline_what": "p95 with 1 session, same run",
        "ratio": round(p95 / base_p95, 2) if base_p95 else None,
        "machines": machines, "events_received": events,
        "events_per_s": round(events / secs, 1) if secs else None,
        "errors": (base_err + load_err)[:5],
        "target": "p95 <= 250 ms, no errors",
        "ok": p95 <= 250 and not base_err and not load_err and machines == CLIENTS,
    })
    out.append({
        "bench": "web_load_single_session_command_rtt_p50", "unit": "ms",
        "value": round(statistics.median(base), 2) if base else None,
        "commands": len(base),
    })
    return out


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
