"""A clean load of the dashboard is quiet: no console errors, no failed or refused requests.

Headless Chromium (Debian's, driven by Playwright) opens the page of a server without an API key, as a new user's
first visit does, and stays until the live video plays and the event stream is open. Every console message of type
error, every request that fails at the network level and every response of 400 or more is collected; the page must
produce none (a missing favicon used to answer 404 on every load).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Request, Response, sync_playwright

from tests.support.app_server import AppServer, model_section

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PAGE_TIMEOUT_MS = 120_000  # the model loads on a busy 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clip_360p: Path, person_model: Path) -> Iterator[AppServer]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    config = tmp_path_factory.mktemp("web-console") / "streamsrv.yaml"
    config.write_text(
        model_section(person_model)
        + "preview: {host_addresses: ['127.0.0.1']}\n"
        + f"cameras:\n  - {{id: c1, url: '{clip_360p}', loop: true, detect_fps: 2}}\n"
    )
    app = AppServer(config)
    app.start()
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()


def test_clean_load_logs_no_console_errors_and_no_failed_requests(server: AppServer) -> None:
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def on_failed(request: Request) -> None:
        problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", on_failed)
            page.on("response", on_response)
            page.goto(server.base_url, wait_until="load")
            page.wait_for_selector(".tile[data-camera='c1'] .badge.online")
            page.wait_for_function(
                "() => { const v = document.querySelector('video.live-video');"
                " return v && v.readyState >= 2 && v.currentTime > 0 }"
            )
            # The favicon is fetched after load, on the browser's own schedule: give it time to ask.
            page.wait_for_timeout(2000)
            # Taken before leaving: closing the page aborts the event stream, which is no fault of the load.
            found = list(problems)
        finally:
            browser.close()
    assert not found, "\n".join(found)
