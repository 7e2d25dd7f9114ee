"""POST /api/detect against the real server and model: people found in ultralytics' sample photos (JPEG, PNG, WebP,
and an image wider than the shared image lane), filters, the annotated JPEG, and every kind of bad upload refused with
a 4xx naming what was wrong while the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import ultralytics

from tests.support.app_server import AppServer, AppServers, model_section

pytestmark = pytest.mark.slow

ASSETS = Path(ultralytics.__file__).parent / "assets"
API_KEY = "detect-key-81c3"
MAX_IMAGE_BYTES = 2_000_000
MAX_IMAGE_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path) -> AppServer:
    return module_app_factory(
        model_section(person_model)
        + f"server: {{api_key: {API_KEY}}}\n"
        + f"jobs: {{max_image_bytes: {MAX_IMAGE_BYTES}, max_image_pixels: {MAX_IMAGE_PIXELS}}}\n"
    )


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client(api_key=API_KEY, timeout_s=120) as client:
        yield client


def detect(http: httpx.Client, name: str, data: bytes, content_type: str, **params: Any) -> httpx.Response:
    return http.post("/api/detect", files={"file": (name, data, content_type)}, params=params)


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def people(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [d for d in response.json()["detections"] if d["label"] == "person"]


def test_finds_the_people_in_the_sample_photos(http: httpx.Client) -> None:
    bus = detect(http, "bus.jpg", (ASSETS / "bus.jpg").read_bytes(), "image/jpeg")
    body = bus.json()
    assert (body["width"], body["height"]) == (810, 1080)
    assert body["model"] == "person_yolov8s.pt"
    found = people(bus)
    assert len(found) >= 3  # the people standing in front of the bus
    for d in found:
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 < x2 <= 810 and 0 <= y1 < y2 <= 1080
        assert y2 - y1 > 300  # whole people, not fragments
    zidane = people(detect(http, "zidane.jpg", (ASSETS / "zidane.jpg").read_bytes(), "image/jpeg"))
    assert len(zidane) >= 2


def test_png_and_webp_find_the_same_people(http: httpx.Client) -> None:
    image = cv2.imread(str(ASSETS / "bus.jpg"))
    reference = people(detect(http, "bus.png", encode(image, ".png"), "image/png"))
    # A generic type is fine when the bytes say what the image is (curl sends WebP as application/octet-stream).
    webp = people(detect(http, "bus.webp", encode(image, ".webp"), "application/octet-stream"))
    assert len(webp) == len(reference)
    for a, b in zip(sorted(webp, key=lambda d: d["bbox"]), sorted(reference, key=lambda d: d["bbox"]), strict=True):
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=15)  # lossy WebP moves edges a little


def test_image_wider_than_the_lane_gets_boxes_in_its_own_pixels(http: httpx.Client) -> None:
    zidane = cv2.imread(str(ASSETS / "zidane.jpg"))
    wide = np.zeros((720, 4400, 3), np.uint8)  # wider than the lane's 4096 px: scaled down before inference
    wide[:, :3840] = np.hstack([zidane] * 3)
    smaller = cv2.resize(wide, (4000, 655), interpolation=cv2.INTER_AREA)  # the same picture, fits the lane
    got = people(detect(http, "wide.jpg", encode(wide, ".jpg"), "image/jpeg"))
    reference = people(detect(http, "smaller.jpg", encode(smaller, ".jpg"), "image/jpeg"))
    expected = np.array([d["bbox"] for d in reference]) * np.array([4400 / 4000, 720 / 655] * 2)
    # People this small sit near the threshold, so each picture may have a box the other lacks; the boxes both
    # found must agree. Boxes left in the lane's pixels would be 7% off: too far for these IoUs.
    sure = [d for d in got if d["confidence"] >= 0.5]
    agreeing = [d for d in sure if max(iou(d["bbox"], e) for e in expected) >= 0.85]
    assert len(agreeing) >= 3, (sure, expected)
    assert all(abs(d["bbox"][3] - 720) < 3 for d in sure)  # zidane's people are cut off by the bottom edge


def iou(a: list[float], b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


def test_confidence_and_classes_filter_and_annotate_draws(http: httpx.Client) -> None:
    data = (ASSETS / "bus.jpg").read_bytes()
    everyone = people(detect(http, "bus.jpg", data, "image/jpeg"))
    sure = people(detect(http, "bus.jpg", data, "image/jpeg", confidence=0.6))
    assert [d for d in everyone if d["confidence"] >= 0.6] == sure
    assert people(detect(http, "bus.jpg", data, "image/jpeg", classes="person", model="person_yolov8s")) == everyone

    annotated = detect(http, "bus.jpg", data, "image/jpeg", annotate="true")
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    assert int(annotated.headers["x-detections"]) == len(everyone)
    drawn = cv2.imdecode(np.frombuffer(annotated.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(ASSETS / "bus.jpg"))
    assert drawn.shape == original.shape
    x1, y1, _, y2 = (round(v) for v in everyone[0]["bbox"])

    def off_box_colour(image: np.ndarray) -> float:
        return float(np.abs(image[y1 + 10 : y2 - 10, x1].astype(int) - (0, 200, 255)).sum(axis=1).mean())

    assert off_box_colour(drawn) < off_box_colour(original) / 2  # the box's left edge is drawn


def test_bad_uploads_get_a_4xx_naming_the_problem(app: AppServer, http: httpx.Client) -> None:
    jpeg = (ASSETS / "bus.jpg").read_bytes()
    elf = b"\x7fELF\x02\x01\x01" + bytes(200)
    cases: list[tuple[str, bytes, str, dict[str, Any], int, str]] = [
        ("doc.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "application/pdf", {}, 415, "application/pdf"),
        ("tool", elf, "application/octet-stream", {}, 415, "not a JPEG, PNG or WebP"),
        ("doc.jpg", b"%PDF-1.7\n1 0 obj", "image/jpeg", {}, 415, "not a JPEG, PNG or WebP"),
        ("bus.png", jpeg, "image/png", {}, 415, "sent as image/png but it is JPEG"),
        ("empty.jpg", b"", "image/jpeg", {}, 422, "empty"),
        ("half.jpg", jpeg[: len(jpeg) // 2], "image/jpeg", {}, 422, "corrupt or truncated"),
        ("noise.jpg", jpeg[:20] + np.random.default_rng(1).bytes(5000), "image/jpeg", {}, 422, "corrupt"),
        ("big.jpg", jpeg[:4] + bytes(MAX_IMAGE_BYTES + 1000), "image/jpeg", {}, 413, "jobs.max_image_bytes"),
        ("huge.jpg", jpeg[:4] + bytes(MAX_IMAGE_BYTES * 2), "image/jpeg", {}, 413, "jobs.max_image_bytes"),
        ("bus.jpg", jpeg, "image/jpeg", {"model": "yolov8x.pt"}, 422, "only 'person_yolov8s.pt'"),
        ("bus.jpg", jpeg, "image/jpeg", {"confidence": 0.05}, 422, "model.confidence"),
        ("bus.jpg", jpeg, "image/jpeg", {"classes": "person,car"}, 422, "['car']"),
    ]
    for name, data, content_type, params, code, message in cases:
        response = detect(http, name, data, content_type, **params)
        assert response.status_code == code, (name, params, response.text)
        assert message in response.json()["detail"], (name, response.text)

    many_pixels = encode(np.zeros((2000, 2100, 3), np.uint8), ".png")  # small file, 4.2 MP when decoded
    assert len(many_pixels) < MAX_IMAGE_BYTES
    response = detect(http, "bomb.png", many_pixels, "image/png")
    assert response.status_code == 413 and "jobs.max_image_pixels" in response.json()["detail"]

    assert http.post("/api/detect", content=jpeg, headers={"content-type": "image/jpeg"}).status_code == 422
    with app.client() as anonymous:
        assert detect(anonymous, "bus.jpg", jpeg, "image/jpeg").status_code == 401

    # still serving, and nothing above was an unhandled error
    assert len(people(detect(http, "bus.jpg", jpeg, "image/jpeg"))) >= 3
    assert "Traceback" not in app.log()
