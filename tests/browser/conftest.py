"""End-to-end fixtures: a live server in a thread and Debian's Chromium driven by Playwright.

The server is the real app (real machines, real guest) on a free loopback port; Chromium is
the system one (``/usr/bin/chromium``, ``apt-get install chromium``) -- Playwright never
downloads a browser here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.config import MachineConfig
from tests.webapp.conftest import web_config
from webapp import live
from webapp.live import CHROMIUM_ARGS, LiveServer

CHROMIUM = os.environ.get("VMEMLAB_CHROMIUM", live.CHROMIUM)

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def browser_config() -> MachineConfig:
    """The same small machine the socket tests use (two nodes, 128 blocks per device)."""
    return web_config()


@pytest.fixture(scope="package")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer({"TESTING": True, "VMEMLAB_DEFAULT_MACHINE": browser_config,
                         "VMEMLAB_MAX_MACHINES": 12,
                         # every page comes from 127.0.0.1, one client for the rate limits
                         "VMEMLAB_RATELIMIT_MACHINES": "100000 per minute"})
    yield server
    server.close()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium: Any, live_server: LiveServer) -> Iterator[Any]:
    """Open the sandbox in a fresh browser context (its own cookie, so its own machine)."""
    contexts: list[Any] = []

    def open_page(width: int = 1400, height: int = 1000, tour: bool = False) -> Any:
        context = chromium.new_context(viewport={"width": width, "height": height},
                                       base_url=live_server.url)
        contexts.append(context)
        if not tour:  # the first-visit tour (static/tour.js) would cover the page
            context.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.goto("/")
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()
    live_server.manager.close_sessions()


@pytest.fixture(autouse=True)
def _close_labs(live_server: LiveServer) -> Iterator[None]:
    """/compare's labs end with their test, as sessions do."""
    yield
    from webapp.compare_routes import LABS

    live_server.app.extensions[LABS].close_all()
