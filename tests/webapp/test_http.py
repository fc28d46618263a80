"""Every HTTP route: pages, JSON API, save/load, validation, isolation, limits."""

from __future__ import annotations

import io
import time

import pytest

from emulator.config import MiB
from tests.webapp.conftest import web_config, with_csrf
from webapp import ext


def wait_plugged(http, dev_id: str, size: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = http.get("/api/machine/status").get_json()
        dev = next(d for d in status["devices"] if d["id"] == dev_id)
        if dev["plugged_size"] == size and dev["driver_state"] == "idle":
            return http.get("/api/machine").get_json()
        assert time.monotonic() < deadline, dev
        time.sleep(0.02)


def test_index_page_loads_local_vendor_assets_and_sets_a_cookie(app):
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/static/vendor/socket.io.min.js" in html and "/static/vendor/plotly.min.js" in html
    assert "//cdn" not in html and "https://" not in html
    assert "session=" in page.headers.get("Set-Cookie", "")
    for path in ("/static/app.js", "/static/grid.js", "/static/style.css",
                 "/static/vendor/socket.io.min.js", "/static/vendor/plotly.min.js"):
        assert client.get(path).status_code == 200, path


def test_status_route(http):
    status = http.get("/api/machine/status").get_json()
    assert status["ok"] and status["runstate"] == "running"
    assert [d["id"] for d in status["devices"]] == ["vm0", "vm1"]


def test_healthz(app):
    data = app.test_client().get("/healthz").get_json()
    assert data["status"] == "ok" and data["max_machines"] == 8


def test_machine_info_equals_query_memory_devices(http):
    info = wait_plugged(http, "vm0", 64 * MiB)
    qmp = http.get("/api/machine/memory-devices").get_json()["return"]
    assert [d["data"]["id"] for d in qmp] == ["vm0", "vm1"]
    vm0 = qmp[0]["data"]
    assert vm0 == {"memaddr": vm0["memaddr"], "node": 0, "requested-size": 64 * MiB,
                   "size": 64 * MiB, "max-size": 256 * MiB, "block-size": 2 * MiB,
                   "memdev": "/objects/mem0", "id": "vm0"}
    assert info["devices"]["vm0"]["plugged_size"] == vm0["size"]
    assert [n["node_id"] for n in info["nodes"]] == [0, 1]


def test_requested_size_route(http):
    wait_plugged(http, "vm1", 32 * MiB)
    ok = http.post("/api/machine/requested-size", json={"device": "vm1", "size": "96M"})
    assert ok.status_code == 200 and ok.get_json()["requested_size"] == 96 * MiB
    wait_plugged(http, "vm1", 96 * MiB)
    bad = http.post("/api/machine/requested-size", json={"device": "vm1", "size": 5 * MiB})
    assert bad.status_code == 400
    assert bad.get_json() == {
        "ok": False,
        "error": "'requested-size' has to be multiples of 'block-size' (0x200000)"}
    assert http.post("/api/machine/requested-size", data="{nope",
                     content_type="application/json").status_code == 400
    assert http.post("/api/machine/requested-size", json=[1, 2]).status_code == 400


def test_guest_route(http):
    alloc = http.post("/api/machine/guest", json={"action": "alloc", "size": 2}).get_json()
    assert alloc["ok"] and alloc["pages"] == 512
    rogue = http.post("/api/machine/guest", json={"action": "rogue_write", "device": "vm0"})
    # shipped QEMU protects nothing: the write goes through and the host backs the page again
    assert rogue.get_json()["blocked"] is False and rogue.get_json()["host-resident"] is True
    bad = http.post("/api/machine/guest", json={"action": "alloc", "size": "many"})
    assert bad.status_code == 400 and "not a size" in bad.get_json()["error"]


def test_reboot_and_run_routes(http):
    assert http.post("/api/machine/reboot", json={"mode": "reset"}).status_code == 200
    wait_plugged(http, "vm0", 64 * MiB)
    assert http.post("/api/machine/run", json={"action": "pause"}).get_json()["runstate"] == \
        "paused"
    assert http.post("/api/machine/run", json={"action": "resume"}).get_json()["runstate"] == \
        "running"
    step = http.post("/api/machine/run", json={"action": "step"})
    assert step.status_code == 409 and "paused" in step.get_json()["error"]
    assert http.post("/api/machine/reboot", json={"mode": 3}).status_code == 400


def test_hmp_route(http):
    out = http.post("/api/machine/hmp", json={"line": "info memory-devices"}).get_json()
    assert out["ok"] and out["output"]


def test_block_route(http):
    wait_plugged(http, "vm0", 64 * MiB)
    info = http.get("/api/machine/block?device=vm0&block=0").get_json()
    assert info["plugged"] is True and info["addr"] > 0
    assert http.get("/api/machine/block?device=vm0&block=-1").status_code == 400
    assert http.get("/api/machine/block?device=zz&block=1").status_code == 400


def test_new_machine_route_and_default_config(http):
    wait_plugged(http, "vm0", 64 * MiB)
    default = http.get("/api/config/default").get_json()["config"]
    assert default["nodes"] == 2 and len(default["devices"]) == 2
    # 128 MiB: one whole Linux memory block, the least a virtio-mem device can be useful with
    made = http.post("/api/machine", json={"nodes": 1, "device_size": 128, "requested_size": 8,
                                           "boot_ram": 32})
    assert made.status_code == 200, made.get_json()
    wait_plugged(http, "vm0", 8 * MiB)
    bad = http.post("/api/machine", json={"boot_ram": "a lot"})
    assert bad.status_code == 400 and "boot RAM" in bad.get_json()["error"]
    qemu = http.post("/api/machine", json={"block_size": "3M"})
    assert qemu.get_json()["error"] == "'block-size' property has to be a power of two"


def test_save_and_load_bring_the_same_blocks_back(http):
    wait_plugged(http, "vm0", 64 * MiB)
    http.post("/api/machine/requested-size", json={"device": "vm0", "size": "100M"})
    http.post("/api/machine/guest", json={"action": "alloc", "size": 2, "target": "vm0",
                                          "unmovable": True})
    before = wait_plugged(http, "vm0", 100 * MiB)
    saved = http.get("/api/machine/state")
    assert saved.status_code == 200
    assert "attachment" in saved.headers["Content-Disposition"]
    data = saved.get_data()
    assert data.startswith(b"VMEMLAB-WEB-SAVE\n")
    http.post("/api/machine/requested-size", json={"device": "vm0", "size": "0"})
    loaded = http.post("/api/machine/state",
                       data={"file": (io.BytesIO(data), "m.vmstate")},
                       content_type="multipart/form-data")
    assert loaded.status_code == 200, loaded.get_json()
    after = wait_plugged(http, "vm0", 100 * MiB)
    config = ("block_size", "node", "addr", "region_size", "usable_region_size",
              "plugged_size", "requested_size")
    assert list(after["devices"]) == list(before["devices"])
    for dev_id, b in before["devices"].items():
        a = after["devices"][dev_id]
        assert a["guest"] == b["guest"] and [a[k] for k in config] == [b[k] for k in config]
    verify = http.post("/api/machine/guest", json={"action": "verify"}).get_json()
    assert verify["ok"] and verify["bad"] == 0 and verify["checked"] > 0


def test_load_rejects_garbage(http):
    bad = http.post("/api/machine/state", data={"file": (io.BytesIO(b"hello"), "x.vmstate")},
                    content_type="multipart/form-data")
    assert bad.status_code == 400 and bad.get_json()["error"] == "not a vmemlab state file"
    assert http.get("/api/machine").get_json()["runstate"] == "running"


def test_two_browsers_have_separate_machines(app):
    a, b = app.test_client(), app.test_client()
    a.get("/")
    b.get("/")
    with_csrf(a)
    wait_plugged(a, "vm0", 64 * MiB)
    a.post("/api/machine/requested-size", json={"device": "vm0", "size": "128M"})
    wait_plugged(a, "vm0", 128 * MiB)
    other = b.get("/api/machine").get_json()
    assert other["devices"]["vm0"]["requested_size"] == 64 * MiB
    assert len(ext.sessions(app)) == 2


def test_machine_limit_answers_503(app):
    clients = []
    for _ in range(8):
        c = app.test_client()
        c.get("/")
        assert c.get("/api/machine").status_code == 200
        clients.append(c)
    extra = app.test_client()
    extra.get("/")
    full = extra.get("/api/machine")
    assert full.status_code == 503 and "limit" in full.get_json()["error"]


def test_unknown_api_route_is_json_404(http):
    resp = http.get("/api/nothing-here")
    assert resp.status_code == 404


@pytest.mark.parametrize("route", ["/api/machine/requested-size", "/api/machine/guest",
                                   "/api/machine/reboot", "/api/machine/run",
                                   "/api/machine/hmp", "/api/machine"])
def test_every_post_route_rejects_non_objects(http, route):
    resp = http.post(route, json="just a string")
    assert resp.status_code == 400
    assert resp.get_json()["ok"] is False and "Traceback" not in resp.get_json()["error"]
    assert "CSRF" not in resp.get_json()["error"]  # refused for its body, not for the token


def test_web_config_is_small(http):
    assert sum(d.size for d in web_config().devices) == 512 * MiB
