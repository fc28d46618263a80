"""The store of reclaimed machines' last saves stays bounded on disk (files, bytes, age)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from webapp.last_save import LastSaves


def _saves(folder: Path, **limits: float) -> LastSaves:
    opts = {"max_files": 10, "ttl": 3600.0, "max_bytes": 1000, "max_total": 2500, **limits}
    return LastSaves(str(folder), max_files=int(opts["max_files"]), ttl=opts["ttl"],
                     max_bytes=int(opts["max_bytes"]), max_total=int(opts["max_total"]))


def _age(saves: LastSaves, token: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(saves.path(token), (then, then))


def test_the_oldest_go_when_the_bytes_would_exceed_the_total(tmp_path: Path) -> None:
    saves = _saves(tmp_path)
    for i, token in enumerate(("a", "b", "c")):
        saves.keep(token, b"x" * 1000)
        _age(saves, token, 30 - i)  # a is the oldest
    # 3000 bytes > 2500: the oldest went when c was kept
    assert saves.saved_at("a") is None
    assert saves.saved_at("b") is not None and saves.saved_at("c") is not None
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) <= 2500


def test_too_large_too_many_and_too_old_are_not_kept(tmp_path: Path) -> None:
    saves = _saves(tmp_path, max_files=2, max_total=10_000)
    saves.keep("big", b"x" * 1001)
    assert saves.saved_at("big") is None  # over max_bytes: never written
    for i, token in enumerate(("a", "b", "c")):
        saves.keep(token, b"x")
        _age(saves, token, 30 - i)
    saves.prune()
    assert [t for t in "abc" if saves.saved_at(t) is not None] == ["b", "c"]
    _age(saves, "c", 7200)
    assert saves.saved_at("c") is None  # expired: not offered
    saves.prune()
    assert not os.path.exists(saves.path("c"))
