"""Pages made from the project's own docs: ``/about/model`` is ``docs/model.md``.

One text, two readers: the markdown file in the repository and the page a student opens.
Each published doc is rendered once, when the app starts, with markdown-it-py (raw HTML in
the markdown is not passed through: it would be shown as text). A link to another published
doc (``personalities.md``) becomes a link to its page; a doc that is not there yet is a 404.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

#: page name -> file under docs/
PUBLISHED = {"model": "model.md", "personalities": "personalities.md"}
_DOC_LINK = re.compile(r"^(?P<stem>[a-z][a-z0-9-]*)\.md(?P<anchor>#[\w-]*)?$")


@dataclass(frozen=True)
class DocPage:
    name: str
    title: str
    html: Markup


def _parser() -> MarkdownIt:
    # "js-default": CommonMark plus tables, no raw HTML, no typographic replacements
    return MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False})


def _relink(tokens: list[Token]) -> None:
    """``personalities.md`` -> ``/about/personalities`` for every published doc."""
    for token in tokens:
        for child in token.children or []:
            if child.type != "link_open":
                continue
            match = _DOC_LINK.match(str(child.attrGet("href") or ""))
            if match and match.group("stem") in PUBLISHED:
                child.attrSet("href", f"/about/{match.group('stem')}{match.group('anchor') or ''}")


def _title(tokens: list[Token], default: str) -> str:
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag == "h1":
            return tokens[i + 1].content
    return default


def render(name: str, text: str) -> DocPage:
    md = _parser()
    tokens = md.parse(text)
    _relink(tokens)
    html = md.renderer.render(tokens, md.options, {})
    return DocPage(name, _title(tokens, name), Markup(html))  # safe: raw HTML is not passed


def load_all(docs_dir: str) -> dict[str, DocPage]:
    """Every published doc that exists in ``docs_dir``, rendered."""
    pages = {}
    for name, filename in PUBLISHED.items():
        path = os.path.join(docs_dir, filename)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as stream:
                pages[name] = render(name, stream.read())
    return pages

