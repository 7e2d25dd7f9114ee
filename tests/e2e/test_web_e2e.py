"""The dashboard end to end in a real headless Chromium (Debian's, driven by Playwright) against the real server
(`streamsrv serve` with a file camera, the real model and an API key): the key is asked for and used, the WebRTC
video plays, an MJPEG image updates, a line.cross event shows in the feed, a tripwire drawn in the editor is saved
through the REST API, and leaving the page closes the server's peers. Screenshots go to artifacts/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.conftest import REPO_ROOT
from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.processes import TurnServer
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
API_KEY = "e2e-key-5d21"
ARTIFACTS = REPO_ROOT / "artifacts"
PAGE_TIMEOUT_MS = 120_000  # the model loads and the first crossings happen on a busy 2-core machine


@pytest.fixture(scope="module")
def server(module_app_factory: AppServers, clip_360p: Path, person_model: Path) -> AppServer:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    return module_app_factory(
        model_section(person_model)
        + f"server: {{api_key: {API_KEY}}}\n"
        # aioice never offers 127.0.0.1 by itself: the browser and the server meet on loopback.
        + "preview: {host_addresses: ['127.0.0.1']}\n"
        + "cameras:\n"
        + f"  - {{id: concourse, name: Concourse, url: '{clip_360p}', loop: true, detect_fps: 5,\n"
        + "      rules: {lines: [{name: midline, points: [[0, 0.55], [1, 0.55]], units: norm,\n"
        + "                       left_to_right: down, right_to_left: up}]}}\n"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def keep_candidates(sdp: str, keep: Callable[[str], bool]) -> str:
    """``sdp`` with only the ICE candidate lines that ``keep`` accepts."""
    return "\r\n".join(ln for ln in sdp.split("\r\n") if not ln.startswith("a=candidate") or keep(ln))


def loopback_only(route: Route) -> None:
    """Drop the browser's non-loopback candidates (mDNS names, LAN addresses) from the offer: on this machine
    they would send the server resolving multicast names; the browser's checks to 127.0.0.1 connect anyway."""
    body = json.loads(route.request.post_data or "{}")
    body["sdp"] = keep_candidates(body["sdp"], lambda ln: " 127.0.0.1 " in ln)
    route.continue_(post_data=json.dumps(body))


class CandidateFilter:
    """A route for the WebRTC offer that keeps only the candidates ``keep`` accepts, in the offer and in the real
    server's answer alike (a network where the other paths do not exist); the unfiltered SDPs are kept."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self.keep = keep
        self.offers: list[str] = []
        self.answers: list[str] = []

    def __call__(self, route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        self.offers.append(body["sdp"])
        body["sdp"] = keep_candidates(body["sdp"], self.keep)
        answer = route.fetch(post_data=json.dumps(body))  # the real server answers the offer
        reply = answer.json()
        self.answers.append(reply["sdp"])
        reply["sdp"] = keep_candidates(reply["sdp"], self.keep)
        route.fulfill(response=answer, json=reply)


def wait_until_video_plays(page: Page) -> None:
    """The WebRTC video has the camera's size (a placeholder is larger until the first frame), and its clock
    advances."""
    page.wait_for_function(
        "() => { const v = document.querySelector('video.live-video'); return v && v.videoWidth === 640 }"
    )
    t0 = page.eval_on_selector("video.live-video", "v => v.currentTime")
    page.wait_for_function(f"() => document.querySelector('video.live-video').currentTime > {t0} + 1")


def wait_until_mjpeg_updates(page: Page) -> None:
    """The MJPEG image shows a picture, then a different one."""
    page.wait_for_function(
        "() => { const i = document.querySelector('img.live-mjpeg'); return i && i.naturalWidth > 0 }"
    )
    first = page.eval_on_selector("img.live-mjpeg", IMAGE_HASH_JS)
    page.wait_for_function(f"h => ({IMAGE_HASH_JS})(document.querySelector('img.live-mjpeg')) !== h", arg=first)


def preview_stats(server: AppServer) -> dict[str, Any]:
    with server.client(API_KEY) as http:
        stats: dict[str, Any] = http.get("/api/preview/stats").json()
        return stats


# A digest of what an <img> shows now, drawn into a canvas (for MJPEG: the current part).
IMAGE_HASH_JS = """img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    for (let i = 0; i < d.length; i += 97) h = (h * 31 + d[i]) >>> 0;
    return String(h);
}"""


def test_dashboard_plays_streams_shows_events_and_edits_rules(server: AppServer, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.route("**/webrtc", loopback_only)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.base_url)

    # The server wants a key: the page asks for it, keeps it, and sends it (header, or ?token= for img/SSE).
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-save")

    wait_until_video_plays(page)
    assert page.eval_on_selector("video.live-video", "v => v.videoHeight") == 360
    assert page.eval_on_selector("video.live-video", "v => v.getVideoPlaybackQuality().totalVideoFrames") > 0
    assert page.text_content(".tile .mode") == "WebRTC"
    page.wait_for_selector(".tile .badge.online")

    # A person crossing the midline shows up in the event feed, with its snapshot.
    page.wait_for_selector('#feed li.event[data-type="line.cross"]')
    page.wait_for_function(
        "() => { const i = document.querySelector('#feed li[data-type=\"line.cross\"] img');"
        " return i && i.complete && i.naturalWidth > 0 }"
    )
    page.screenshot(path=str(ARTIFACTS / "web-dashboard.png"))

    # MJPEG, in a second tab (the key is remembered): the image updates.
    mjpeg = context.new_page()
    mjpeg.goto(f"{server.base_url}/?transport=mjpeg")
    wait_until_mjpeg_updates(mjpeg)
    assert mjpeg.text_content(".tile .mode") == "MJPEG"
    mjpeg.close()

    # The zone editor: draw a tripwire on the live picture, name it, save it.
    page.click(".tile")
    page.wait_for_selector("#detail-view:not([hidden]) video.live-video")
    page.click("#edit-toggle")
    page.wait_for_selector("#editor-svg:not([hidden]) .shape.line")
    page.click("#add-line")
    box = page.locator("#editor-svg").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 0.1 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.click(box["x"] + 0.9 * box["width"], box["y"] + 0.3 * box["height"])
    page.keyboard.press("Enter")
    page.fill("#rule-list li.selected input.name", "e2e_gate")
    page.click("#save-rules")
    page.wait_for_function("() => document.querySelector('#editor-msg').textContent.startsWith('Saved')")
    page.screenshot(path=str(ARTIFACTS / "web-editor.png"))

    with server.client(API_KEY) as http:
        rules = http.get("/api/cameras/concourse/rules").json()
        lines = {ln["name"]: ln for ln in http.get("/api/cameras/concourse/lines").json()}
    assert {ln["name"] for ln in rules["lines"]} == {"midline", "e2e_gate"}
    gate = lines["e2e_gate"]
    assert gate["units"] == "norm" and len(gate["points"]) == 2
    (x1, y1), (x2, y2) = gate["points"]
    assert x1 == pytest.approx(0.1, abs=0.02) and x2 == pytest.approx(0.9, abs=0.02)
    assert y1 == pytest.approx(0.3, abs=0.02) and y2 == pytest.approx(0.3, abs=0.02)
    assert lines["midline"]["points"] == [[0.0, 0.55], [1.0, 0.55]], "the other tripwire is kept as it was"

    # Leaving the page closes its WebRTC peer on the server and stops the camera's preview loop.
    assert preview_stats(server)["webrtc_peers"] == 1
    page.close()
    wait_for(lambda: preview_stats(server)["webrtc_peers"] == 0, 60, "the server to close the peer")
    wait_for(lambda: preview_stats(server)["feeds"] == 0, 20, "the preview loop to stop")
    context.close()
    assert not errors, errors


def test_page_works_without_an_api_key_prompt_when_none_is_set(
    app_factory: AppServers, clip_360p: Path, person_model: Path, browser: Browser
) -> None:
    """Without server.api_key the page never asks for one; an unknown camera in the URL falls back to the grid."""
    app = app_factory(
        model_section(person_model)
        + "preview: {host_addresses: ['127.0.0.1']}\n"
        + f"cameras:\n  - {{id: c1, url: '{clip_360p}', loop: true, detect_fps: 2}}\n",
        ready=False,
    )
    page = browser.new_page()
    page.goto(f"{app.base_url}/#/camera/missing")
    page.wait_for_selector(".tile[data-camera='c1']", timeout=PAGE_TIMEOUT_MS)
    assert not page.is_visible("#key-dialog")
    assert page.is_visible("#grid-view") and not page.is_visible("#detail-view")
    assert httpx.get(f"{app.base_url}/static/style.css").status_code == 200
    page.close()


def test_page_falls_back_to_mjpeg_when_webrtc_is_refused_or_cannot_connect(server: AppServer, browser: Browser) -> None:
    """The automatic fallback, both ways WebRTC fails in the field: the offer is refused (a proxy that blocks the
    endpoint), and the offer is answered but no ICE path exists (UDP blocked by a NAT or firewall without TURN):
    the tile plays MJPEG instead, says why, and leaves no peer behind on the server."""
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    context.add_init_script(f"localStorage.setItem('streamsrv.apiKey', {json.dumps(API_KEY)})")

    def refused(route: Route) -> None:
        route.abort("connectionrefused")

    no_path = CandidateFilter(keep=lambda ln: False)
    for case, handler in (("refused", refused), ("no ICE path", no_path)):
        context.unroute("**/webrtc")
        context.route("**/webrtc", handler)
        page = context.new_page()
        page.goto(server.base_url)
        wait_until_mjpeg_updates(page)
        assert page.text_content(".tile .mode") == "MJPEG", case
        assert (page.get_attribute(".tile .mode", "title") or "").startswith("WebRTC unavailable: "), case
        assert not page.query_selector("video.live-video"), case
        page.screenshot(path=str(ARTIFACTS / f"web-fallback-{case.replace(' ', '-')}.png"))
        page.close()
        wait_for(lambda: preview_stats(server)["webrtc_peers"] == 0, 60, f"no peer left after {case}")
    context.close()


def is_relay(candidate: str) -> bool:
    return " typ relay" in candidate


def test_webrtc_plays_through_a_turn_relay_when_no_direct_path_exists(
    app_factory: AppServers, clip_360p: Path, person_model: Path, browser: Browser
) -> None:
    """preview.ice_servers with a real TURN server (coturn): the page hands the server's TURN settings to the
    browser, both sides gather relay candidates, and with every other candidate removed from the offer and the
    answer (as behind NATs that allow no direct path) the video still plays, relayed by the TURN server."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed")
    with TurnServer() as turn:
        app = app_factory(
            model_section(person_model)
            + "preview:\n  host_addresses: ['127.0.0.1']\n  ice_servers:\n"
            + f"    - {{urls: ['{turn.url}'], username: {turn.USER}, credential: {turn.PASSWORD}}}\n"
            + f"cameras:\n  - {{id: c1, url: '{clip_360p}', loop: true, detect_fps: 2}}\n"
        )
        context = browser.new_context()
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        relay_only = CandidateFilter(keep=is_relay)
        context.route("**/webrtc", relay_only)
        page = context.new_page()
        page.goto(app.base_url)
        wait_until_video_plays(page)
        assert page.text_content(".tile .mode") == "WebRTC"
        # both sides had relay candidates from the TURN server, and those were all that was left
        offer, answer = relay_only.offers[0], relay_only.answers[0]
        assert " typ relay" in offer and " typ relay" in answer
        assert "typ host" in answer and "typ host" not in keep_candidates(answer, is_relay)
        # and the TURN server relays for both: allocations granted, channels bound to the peers' relays
        relayed = ("ALLOCATE processed, success", "CHANNEL_BIND processed, success")
        wait_for(lambda: all(line in turn.output() for line in relayed), 10, f"coturn to log {relayed}", turn)
        page.screenshot(path=str(ARTIFACTS / "web-turn-relay.png"))
        page.close()
        context.close()
