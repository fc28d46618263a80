"""``vmemlab serve``: the limits come from flags or ``VMEMLAB_*`` environment variables,
and serving beyond loopback says so."""

from __future__ import annotations

from typing import Any

import pytest

from webapp import DEFAULTS, from_environment
from webapp import serve as serve_module


def test_limits_from_the_environment() -> None:
    env = {"VMEMLAB_MAX_RESIDENT": str(1 << 30), "VMEMLAB_SHARE_TTL": "3600",
           "VMEMLAB_RATELIMITS": "off", "VMEMLAB_RATELIMIT_STORAGE_URI": "redis://r:6379",
           "VMEMLAB_SHARE_DIR": "/srv/shares", "PATH": "/bin"}
    assert from_environment(env) == {
        "VMEMLAB_MAX_RESIDENT": 1 << 30, "VMEMLAB_SHARE_TTL": 3600.0,
        "VMEMLAB_RATELIMITS": False, "VMEMLAB_RATELIMIT_STORAGE_URI": "redis://r:6379",
        "VMEMLAB_SHARE_DIR": "/srv/shares"}
    with pytest.raises(ValueError):
        from_environment({"VMEMLAB_MAX_RESIDENT": "lots"})


@pytest.mark.parametrize("host,warns", [("127.0.0.1", False), ("localhost", False),
                                        ("::1", False), ("127.0.0.2", False),
                                        ("0.0.0.0", True), ("::", True), ("192.0.2.7", True),
                                        ("lab.example", True)])
def test_serving_beyond_loopback_prints_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str],
                                                   host: str, warns: bool) -> None:
    apps: list[Any] = []

    def no_listen(app: Any, **kw: Any) -> None:  # the network boundary: listen nowhere
        apps.append(app)

    monkeypatch.setattr(serve_module.socketio, "run", no_listen)
    assert serve_module.main(["--host", host, "--max-resident", "1024", "--share-ttl", "2",
                              "--max-machine-resident", "256",
                              "--rate-limit-storage", "memory://"]) == 0
    err = capsys.readouterr().err
    assert ("WARNING: listening on" in err) == warns, err
    (app,) = apps
    assert app.config["VMEMLAB_MAX_RESIDENT"] == 1 << 30
    assert app.config["VMEMLAB_SHARE_TTL"] == 7200.0
    assert app.extensions["vmemlab"].settings.max_resident == 1 << 30
    assert app.extensions["vmemlab"].settings.max_machine_resident == 256 << 20
    assert app.config["VMEMLAB_MAX_MACHINES"] == DEFAULTS["VMEMLAB_MAX_MACHINES"]
