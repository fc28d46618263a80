"""``/about/model``: docs/model.md as a page, linked from the sandbox and the lessons."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from markdown_it import MarkdownIt

from webapp import docs_pages

DOCS = Path(__file__).resolve().parents[2] / "docs"


class _Article(HTMLParser):
    """The text and the links inside ``<article id="doc">``."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.text: list[str] = []
        self.links: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag == "article" and ("id", "doc") in attrs:
            self.depth = 1
        elif self.depth and tag == "article":
            self.depth += 1
        if self.depth and tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "article":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)


def _words(text: str) -> str:
    return " ".join(text.split())


def markdown_words(text: str) -> str:
    """What a reader of the markdown reads: the text of every inline and code token."""
    words: list[str] = []
    for token in MarkdownIt("js-default").parse(text):
        if token.type == "inline":
            words += [c.content for c in token.children or []
                      if c.type in ("text", "code_inline")]
            words.append(" ")
        elif token.type in ("fence", "code_block"):
            words.append(token.content)
    return _words(" ".join(words))


def test_about_model_is_docs_model_md(app) -> None:
    page = app.test_client().get("/about/model")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    article = _Article()
    article.feed(page.get_data(as_text=True))
    assert article.scripts == 0  # nothing to run, nothing inline
    source = (DOCS / "model.md").read_text(encoding="utf-8")
    assert _words(" ".join(article.text)) == markdown_words(source)
    for phrase in ("One vCPU", "No IOMMU, no VFIO", "no THP", "no page cache", "Stop and copy",
                   "virtio-mmio instead of virtio-pci", "No firmware, no ACPI",
                   "The RFC's commands are history", "retry timer is scaled by 1/50"):
        assert phrase.lower() in _words(" ".join(article.text)).lower(), phrase


def test_links_to_the_page(app) -> None:
    client = app.test_client()
    href = 'href="/about/model"'
    assert href in client.get("/").get_data(as_text=True)  # the sandbox's header
    lessons = client.get("/lessons").get_data(as_text=True)
    assert href in lessons
    name = re.search(r'action="/lessons/([^/"]+)/start"', lessons).group(1)  # type: ignore[union-attr]
    assert href in client.get(f"/lessons/{name}").get_data(as_text=True)


def test_doc_links_go_to_published_pages(app) -> None:
    client = app.test_client()
    article = _Article()
    article.feed(client.get("/about/model").get_data(as_text=True))
    assert article.links
    for link in article.links:
        name = link.removeprefix("/about/").split("#")[0]
        assert link.startswith("/about/") and name in docs_pages.PUBLISHED, link
        expected = 200 if (DOCS / docs_pages.PUBLISHED[name]).exists() else 404
        assert client.get(link).status_code == expected, link


def test_unknown_page_is_404(app) -> None:
    client = app.test_client()
    for path in ("/about/nope", "/about/..%2Fpyproject", "/about/"):
        assert client.get(path).status_code == 404, path


def test_markdown_html_is_shown_as_text() -> None:
    page = docs_pages.render("t", "# T <b>x</b>\n\n<script>alert(1)</script>\n\n"
                                  "[p](personalities.md#x) [q](other.md)\n")
    assert page.title == "T <b>x</b>"  # a plain string: Jinja escapes it in <title>
    assert "<script>" not in page.html and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html
    assert 'href="/about/personalities#x"' in page.html and 'href="other.md"' in page.html
