"""The preview's motion layer: the boxes the motion gate finds in the decoder process travel with their frame through
the frame ring (so into every ``FrameResult`` made from it) and are drawn only for a viewer who asks for the layer
(``?layers=motion``), in the API and through the page's toggle in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from playwright.sync_api import Page, sync_playwright

from streamsrv.api.app import create_app
from streamsrv.config.models import AppConfig
from streamsrv.config.rules import RulesConfig
from streamsrv.ipc.frame_ring import MAX_MOTION_BOXES, FrameRing
from streamsrv.preview.annotate import Annotator, Overlay
from streamsrv.types import CameraState, FrameRef, FrameResult, Tracks
from tests.support.fake_server import FakeServer, serve_in_process
from tests.support.uvicorn_thread import serve_in_thread
from tests.support.waiting import wait_for
from tests.test_clips_live import CHROMIUM, CHROMIUM_ARGS, Cameras

W, H = 640, 360
BOX = (0.25, 0.2, 0.5, 0.8)  # x1, y1, x2, y2 as fractions of the frame
MAGENTA = np.array([255, 0, 255])


def magenta_pixels(image: npt.NDArray[np.uint8]) -> int:
    """Pixels of the motion layer's colour, or near it (JPEG blurs colours); BGR."""
    b, g, r = (image[..., i].astype(np.int16) for i in range(3))
    return int(((b > 150) & (r > 150) & (g < 110)).sum())


def decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_the_frame_ring_carries_the_motion_boxes_with_their_frame() -> None:
    ring = FrameRing.create("test-motion-boxes", W, H)
    try:
        frame = np.zeros((H, W, 3), np.uint8)
        ring.write(frame, frame_index=0, wall_ts=1.0, mono_ts=1.0, video_ts=0.0, motion=[BOX])
        ring.write(frame, frame_index=1, wall_ts=2.0, mono_ts=2.0, video_ts=0.1)
        many = [(i / 40, 0.0, i / 40 + 0.01 * (i + 1), 0.1) for i in range(MAX_MOTION_BOXES + 4)]
        ring.write(frame, frame_index=2, wall_ts=3.0, mono_ts=3.0, video_ts=0.2, motion=many)
        reader = FrameRing.attach(ring.path)  # as the inference process and the preview read it
        first, second, third = (reader.read_seq(seq, "door") for seq in (1, 2, 3))
        assert first is not None and second is not None and third is not None
        assert first[0].motion == (BOX,) and second[0].motion == ()
        boxes = third[0].motion
        assert len(boxes) == MAX_MOTION_BOXES, "folded into what a slot holds"
        assert boxes[-1][0] == 0.0 and boxes[-1][2] == pytest.approx(4 / 40 + 0.05, abs=1e-4), "the 5 smallest in one"
        reader.close()
    finally:
        ring.close()
        ring.unlink()


def test_a_decoder_process_hands_its_motion_boxes_on_with_the_frame(clip_360p: Path) -> None:
    cfg = AppConfig.model_validate({"cameras": [{"id": "hall", "url": str(clip_360p), "loop": True, "detect_fps": 5}]})
    seen: list[FrameRef] = []
    with Cameras(cfg) as cams:

        def moving() -> bool:
            got = cams.decoders.latest_frame("hall")
            if got is not None and got[0].motion:
                seen.append(got[0])
            return bool(seen)

        wait_for(moving, 60, "a frame with motion (people walk through the clip)")
    for x1, y1, x2, y2 in seen[0].motion:
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1


def test_the_annotator_draws_the_motion_layer_only_when_it_is_on() -> None:
    frame = np.full((H, W, 3), 40, np.uint8)
    off = Overlay("door", CameraState.ONLINE, 5.0, RulesConfig())
    assert magenta_pixels(Annotator(W, H).draw(frame, off)) == 0
    assert magenta_pixels(Annotator(W, H).draw(frame, replace(off, motion=()))) == 0, "on, but nothing moves"
    on = Annotator(W, H).draw(frame, replace(off, motion=(BOX,)))
    outline = 2 * (0.25 * W + 0.6 * H)  # the box's perimeter in px; the line is a few px wide
    assert outline <= magenta_pixels(on) <= 3.2 * outline
    assert (on[H // 2, W // 4] == MAGENTA).all() and (on[H // 2, W // 4 + 20] == 40).all()


def camera_config() -> AppConfig:
    return AppConfig.model_validate({"cameras": [{"id": "door", "url": "rtsp://127.0.0.1:1/none"}]})


def show_motion(server: FakeServer) -> None:
    """The camera's newest frame (and the result computed on it) with one moving region."""
    ref = FrameRef("door", 1, 1, W, H, 1.7e9, 100.0, 0.0, motion=(BOX,))
    server.set_frame("door", (ref, np.full((H, W, 3), 40, np.uint8)))
    server.feed(FrameResult(ref, Tracks.empty(), {0: "person"}))


def test_the_preview_draws_motion_boxes_only_for_viewers_who_ask() -> None:
    with serve_in_process(camera_config()) as (client, server):
        show_motion(server)
        plain = client.get("/api/cameras/door/snapshot.jpg")
        layered = client.get("/api/cameras/door/snapshot.jpg", params={"layers": "motion"})
        bad = client.get("/api/cameras/door/snapshot.jpg", params={"layers": "heatmap"})
    assert plain.status_code == layered.status_code == 200
    assert magenta_pixels(decode(plain.content)) == 0
    assert magenta_pixels(decode(layered.content)) > 500
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["query", "layers"]


@pytest.fixture
def page_server() -> Iterator[tuple[str, FakeServer]]:
    """The real app and page on a fake server whose camera shows motion, under uvicorn."""
    cfg = camera_config()
    server = FakeServer(cfg)
    show_motion(server)
    with serve_in_thread(create_app(cfg, server=server)) as url:
        yield url, server


@pytest.mark.browser
def test_the_page_toggles_the_motion_layer(page_server: tuple[str, FakeServer]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    base, _ = page_server

    def shown_magenta(page: Page) -> int:
        page.wait_for_function("document.querySelector('img.live-mjpeg')?.naturalWidth > 0", timeout=30_000)
        return magenta_pixels(decode_png(page.locator("img.live-mjpeg").screenshot()))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/?transport=mjpeg")
            assert not page.is_checked("#motion-layer"), "off by default"
            assert "layers=" not in (page.get_attribute("img.live-mjpeg", "src", timeout=30_000) or "")
            assert shown_magenta(page) == 0
            page.check("#motion-layer")
            page.wait_for_function(
                "document.querySelector('img.live-mjpeg')?.src.includes('layers=motion')", timeout=30_000
            )
            assert shown_magenta(page) > 100
            page.reload()  # the choice is remembered
            assert page.is_checked("#motion-layer")
            page.uncheck("#motion-layer")
            page.wait_for_function("!document.querySelector('img.live-mjpeg')?.src.includes('layers=')", timeout=30_000)
        finally:
            browser.close()


def decode_png(png: bytes) -> npt.NDArray[np.uint8]:
    return decode(png)
