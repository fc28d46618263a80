"""The share button in a real browser: click it, get a link that opens the replay player."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def test_share_button_shows_a_link(new_page: Any, live_server: Any, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(live_server.app.config, "VMEMLAB_SHARE_DIR", str(tmp_path))
    page = new_page()
    page.focus("#btn-share")
    page.keyboard.press("Enter")  # keyboard reachable
    page.wait_for_selector("#share-box:not([hidden])", timeout=10_000)
    link = page.input_value("#share-link")
    assert link.startswith(live_server.url + "/s/"), link
    assert page.evaluate("document.activeElement.id") == "share-link"
    assert not page.is_visible("#error")
    share_id = link.rsplit("/", 1)[1]
    assert (tmp_path / f"{share_id}.ndjson").is_file()
    assert page.errors == []
