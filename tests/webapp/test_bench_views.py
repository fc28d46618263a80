"""The classroom benchmark reads the page's real views: when the view format changes, the
benchmark must change with it (it once read a field the view no longer had and measured
nothing)."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.classroom import settled
from tests.webapp.conftest import Browser


def test_the_benchmarks_settled_check_reads_a_real_view(browser: Callable[[], Browser]) -> None:
    b = browser()
    b.ready()
    view = b.latest_view()
    assert view is not None
    sizes = {dev_id: d["requested_size"] for dev_id, d in view["devices"].items()}
    assert sizes and settled(sizes)(view)
    first = next(iter(sizes))
    assert not settled({**sizes, first: sizes[first] + 2 * 1024 * 1024})(view)
    assert not settled({"no-such-device": 0})(view)
