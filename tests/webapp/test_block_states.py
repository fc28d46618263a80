"""Block states are defined once (``webapp/block_states.py``) and the scripts are ES modules.

The pages receive the table as a JSON data element; no script in ``static/`` defines a code,
a label or a colour of a state, nor puts anything on ``window``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from webapp import block_states
from webapp.block_states import STATES, VIEWS, BlockState

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "static").glob("*.js"))  # first-party only: vendor/ is a subfolder
TEMPLATES = sorted((ROOT / "templates").glob("*.html"))


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[dict[str, str | None]] = []
        self.data: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.tags.append(dict(attrs))
            self._in = dict(attrs).get("id")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.data[self._in] = self.data.get(self._in, "") + data


def _page(app: Flask, path: str) -> _Scripts:
    reply = app.test_client().get(path)
    assert reply.status_code == 200, path
    parser = _Scripts()
    parser.feed(reply.get_data(as_text=True))
    return parser


def test_every_state_has_its_name_label_look_and_a_view() -> None:
    assert set(STATES) == set(BlockState)
    shown = {state for states in VIEWS.values() for state in states}
    assert shown == set(BlockState)  # every state appears in some view's legend
    for view, states in VIEWS.items():
        assert len(set(states)) == len(states), view
    assert len({info.label for info in STATES.values()}) == len(STATES)
    assert {s for s in BlockState if STATES[s].plugged} == block_states.PLUGGED_CODES


def test_an_unplugged_block_with_host_memory_is_named_neutrally() -> None:
    """Shipped QEMU lets a rogue guest write back an unplugged page (issue 10): a state of
    the machine, described with its cause, not a verdict."""
    info = STATES[BlockState.HOST_UNPLUGGED_RESIDENT]
    assert info.name == "unplugged but resident"
    assert info.label == "unplugged but resident (a rogue write: the host backs it again)"
    assert "leak" not in info.label
    assert block_states.name(BlockState.HOST_UNPLUGGED_RESIDENT) == info.name


@pytest.mark.parametrize("path", ["/", "/replay"])
def test_the_pages_get_the_python_table_once(app: Flask, path: str) -> None:
    page = _page(app, path)
    data = [t for t in page.tags if t.get("type") == "application/json"]
    assert [t.get("id") for t in data] == ["vmem-block-states"]
    table: dict[str, Any] = json.loads(page.data["vmem-block-states"])
    assert table == block_states.page_data()
    assert [s["code"] for s in table["states"]] == [int(s) for s in BlockState]
    assert table["views"] == {v: [int(s) for s in states] for v, states in VIEWS.items()}


def test_scripts_are_es_modules_and_set_no_window_globals(app: Flask) -> None:
    for path in ("/", "/replay"):
        for tag in _page(app, path).tags:
            src = tag.get("src") or ""
            if src.startswith("/static/") and not src.startswith("/static/vendor/"):
                assert tag.get("type") == "module", (path, src)
    for template in TEMPLATES:  # every page, rendered or not
        for src in re.findall(r"<script\b([^>]*)>", template.read_text()):
            if "filename='vendor/" in src or 'type="application/json"' in src:
                continue
            assert 'type="module"' in src, (template.name, src)
    assert len(SCRIPTS) >= 10
    for script in SCRIPTS:
        text = script.read_text()
        assert not re.search(r"\bwindow\s*(\.\s*[\w$]+|\[[^\]]*\])\s*=(?!=)", text), script.name
        assert not re.search(r"\b(globalThis|self)\b\s*[.\[]", text), script.name
        assert "Object.assign(window" not in text, script.name
        assert not re.search(r"^\s*\(function\s*\(", text, re.M), f"{script.name}: an IIFE"


def test_no_script_defines_a_block_state() -> None:
    """Codes by key (CODE.PLUGGED_FREE) only: no numbers for states, no labels, no colours."""
    keys = "|".join(s.name for s in BlockState)
    numbered = re.compile(rf"\b(?:{keys}|GUEST|HOST)\b\s*(?:[:=]|[!=]==?)\s*\d")
    by_number = re.compile(r"[{,]\s*\d+\s*:\s*[{\"']")  # {0: {...}, 1: "..."}
    code_compare = re.compile(r"\bcodes?\b[^;\n]*?[!=]==?\s*\d")  # codes[i] === 4
    strings = {text for info in STATES.values() for text in (info.name, info.label)
               if " " in text}  # "plugged" alone is also a CSS class
    colours = {c.lower() for info in STATES.values() for c in info.style.marks().values()
               } - {"#000000", "#ffffff"}  # black and white are everybody's
    for script in SCRIPTS:
        text = script.read_text()
        for pattern in (numbered, by_number, code_compare):
            found = pattern.search(text)
            assert found is None, f"{script.name}: {found.group(0) if found else ''}"
        literals = set(re.findall(r"\"([^\"\n]*)\"|'([^'\n]*)'", text))
        texts = {a or b for a, b in literals}
        assert not texts & strings, f"{script.name}: {texts & strings}"
        if script.name not in ("charts.js",):  # chart lines share the palette, not states
            found_colours = {c.lower() for c in re.findall(r"#[0-9A-Fa-f]{6}\b", text)}
            assert not found_colours & colours, f"{script.name}: {found_colours & colours}"
