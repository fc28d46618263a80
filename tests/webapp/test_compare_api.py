"""/compare's JSON routes: a session's lab of real machines, its limits and its refusals."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from webapp.block_states import BlockState

from .conftest import with_csrf


def wait_idle(client: FlaskClient, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        lab = client.get("/api/compare").get_json()["lab"]
        if lab is not None and lab["busy"] is None:
            return dict(lab)
        assert time.monotonic() < deadline, lab
        time.sleep(0.1)


def result(lab: dict[str, Any], mechanism: str, row: str) -> str:
    col = next(c for c in lab["columns"] if c["name"] == mechanism)
    return str(col["results"][row]["text"])


def test_without_cookie_or_token_nothing_starts(app: Flask) -> None:
    bare = app.test_client()
    assert bare.get("/api/compare").status_code == 403
    client = app.test_client()
    client.get("/compare")
    response = client.post("/api/compare", json={"mechanisms": ["virtio-mem", "dimm"]})
    assert response.status_code == 400 and "CSRF" in response.get_json()["error"]


def test_refusals_are_clear(app: Flask) -> None:
    client = with_csrf(app.test_client())
    cases = [
        ({"mechanisms": ["virtio-mem"]}, "choose two or three different mechanisms"),
        ({"mechanisms": ["virtio-mem", "virtio-mem"]}, "choose two or three"),
        ({"mechanisms": ["virtio-mem", "nope"]}, "unknown mechanism 'nope'"),
        ({"mechanisms": "virtio-mem"}, "mechanisms: expected a list"),
        ({"mechanisms": ["virtio-mem", "dimm"], "online": "x"}, "online: expected one of"),
        ({"mechanisms": ["a" * 40, "dimm"]}, "mechanisms: expected a list"),
    ]
    for body, message in cases:
        response = client.post("/api/compare", json=body)
        assert response.status_code == 400, body
        assert message in response.get_json()["error"]
    response = client.post("/api/compare/action", json={"action": "give-back"})
    assert response.status_code == 400 and "start a comparison first" in response.get_json()[
        "error"]
    assert client.post("/api/compare", data="x", content_type="text/plain").status_code == 400


def test_one_action_drives_every_machine_and_fills_the_table(app: Flask) -> None:
    client = with_csrf(app.test_client())
    response = client.post("/api/compare", json={"mechanisms": ["virtio-mem", "dimm", "xen"],
                                                 "online": "online"})
    assert response.status_code == 200, response.get_json()
    lab = wait_idle(client)
    assert [c["name"] for c in lab["columns"]] == ["virtio-mem", "dimm", "xen"]
    assert all(c["runstate"] == "running" for c in lab["columns"])
    assert result(lab, "dimm", "granularity") == "256 MiB (a whole DIMM)"

    assert client.post("/api/compare/action", json={"action": "pin"}).status_code == 200
    busy = client.post("/api/compare/action", json={"action": "pin"})
    assert busy.status_code in (200, 409)  # 409 while the first one still runs
    lab = wait_idle(client)
    assert client.post("/api/compare/action", json={"action": "give-back"}).status_code == 200
    lab = wait_idle(client)
    assert result(lab, "virtio-mem", "returned").startswith("1008 MiB of 1 GiB")
    assert result(lab, "dimm", "returned").startswith("768 MiB of 1 GiB")
    assert "_OST 130" in result(lab, "dimm", "returned")
    assert result(lab, "xen", "returned") == "1 GiB of 1 GiB"
    assert result(lab, "xen", "granularity") == "4 KiB (a page)"

    client.post("/api/compare/action", json={"action": "rogue-write"})
    lab = wait_idle(client)
    # shipped QEMU protects nothing (issue 10): the write goes through, the host backs it
    assert result(lab, "virtio-mem", "cheat") == (
        "yes: shipped QEMU protects nothing; the host backs the page again")
    assert result(lab, "xen", "cheat") == "no: writing there killed the domain"
    assert next(c for c in lab["columns"] if c["name"] == "xen")["runstate"] == "shutdown"
    grid = next(c for c in lab["columns"] if c["name"] == "virtio-mem")["grid"][0]["cells"]
    # 1008 MiB of 2 MiB blocks given back
    assert bytes.fromhex(grid).count(BlockState.LAB_RETURNED) == 504

    client.post("/api/compare/action", json={"action": "reboot"})
    lab = wait_idle(client)
    assert result(lab, "xen", "reboot").startswith("sees 1.5 GiB, more than the host wants")
    assert result(lab, "dimm", "reboot") == "sees 768 MiB"
    assert client.post("/api/compare/stop", json={}).get_json()["stopped"] is True
    assert client.get("/api/compare").get_json()["lab"] is None


def test_labs_count_against_the_machine_limit(app: Flask) -> None:
    clients = [with_csrf(app.test_client()) for _ in range(3)]
    started = []
    for client in clients:
        response = client.post("/api/compare", json={"mechanisms": ["virtio-mem", "dimm",
                                                                   "hyperv"]})
        started.append(response.status_code)
        if response.status_code != 200:
            assert response.status_code == 429
            assert "its limit" in response.get_json()["error"]
    assert started[:2] == [200, 200] and started[2] == 429  # 8 machines: 3 + 3, not 9
    for client in clients:
        client.post("/api/compare/stop", json={})
    health = app.test_client().get("/healthz").get_json()
    assert health["compare_machines"] == 0
