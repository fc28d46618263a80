"""The sandbox's header leads to /about/model, which renders under the CSP (Chromium)."""

from __future__ import annotations

from typing import Any

WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def test_header_link_opens_the_model_page(new_page: Any) -> None:
    page = new_page()
    page.context.add_init_script(WATCH_CSP)
    page.click("header >> text=about the model")
    page.wait_for_url("**/about/model")
    assert page.title() == "What vmemlab models, and where it stops — vmemlab"
    assert page.locator("article#doc h2").first.text_content() == "Which versions it follows"
    assert page.locator("article#doc table").count() == 1
    assert page.evaluate("() => window.__csp") == []
    assert page.errors == []
    page.click("header >> text=sandbox")  # and back
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
