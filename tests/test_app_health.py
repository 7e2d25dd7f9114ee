"""Probes, metrics, previews and uploads through the real app, in-process on a ``FakeServer``: the shapes and
statuses the API promises, from the fake's canned camera stats, frames and inference health."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.builders import frame_result, track, tracks
from tests.support.fake_server import FakeServer, app_config, serve_in_process

READINESS_FIELDS = {
    "ready",
    "model_loaded",
    "backend",
    "device",
    "inference_alive",
    "inference_restarts",
    "inference_error",
    "cameras",
    "cluster_error",
}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        cameras=[
            {
                "id": "north",
                "url": "rtsp://admin:pw@cam/north",
                "rules": {
                    "zones": [
                        {
                            "name": "all",
                            "polygon": [[0, 0], [1280, 0], [1280, 720], [0, 720]],
                            "labels": ["person", "car"],
                        }
                    ]
                },
            },
            {"id": "hall", "url": "rtsp://cam/hall", "enabled": False},
        ],
        jobs={"spool_dir": str(tmp_path / "spool")},
    )
    with serve_in_process(cfg) as served:
        yield served


@pytest.fixture
def http(app: tuple[TestClient, FakeServer]) -> TestClient:
    return app[0]


def test_healthz(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_the_model_and_the_running_cameras(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app

    ready = http.get("/readyz")
    server.health = replace(server.health, model_loaded=False, alive=False, restarts=2, error="CUDA out of memory")
    loading = http.get("/readyz")

    assert ready.status_code == 200
    assert set(ready.json()) == READINESS_FIELDS
    assert ready.json() == {
        "ready": True,
        "model_loaded": True,
        "backend": "fake",
        "device": "cpu",
        "inference_alive": True,
        "inference_restarts": 0,
        "inference_error": None,
        "cameras": 1,  # the enabled one
        "cluster_error": None,  # not in cluster mode
    }
    assert loading.status_code == 503
    assert (loading.json()["ready"], loading.json()["inference_restarts"]) == (False, 2)
    assert loading.json()["inference_error"] == "CUDA out of memory"


def scrape(http: TestClient) -> list[Sample]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (sample,) = [s for s in samples if s.name == name and s.labels == labels]
    return sample.value


def test_metrics_describe_cameras_rules_and_events(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    server.feed(frame_result("north", tracks(track(1, (100, 100, 200, 400))), ts=0.0))
    server.feed(frame_result("north", tracks(track(1, (100, 100, 200, 400))), ts=0.2))

    samples = scrape(http)

    assert value(samples, "streamsrv_camera_enabled", camera="north") == 1
    assert value(samples, "streamsrv_camera_enabled", camera="hall") == 0
    assert value(samples, "streamsrv_camera_state", camera="north", state="online") == 1
    assert value(samples, "streamsrv_camera_state", camera="north", state="error") == 0
    assert value(samples, "streamsrv_inference_model_loaded") == 1
    assert value(samples, "streamsrv_events_total", camera="north", type="camera.online") == 1
    assert value(samples, "streamsrv_events_total", camera="north", type="zone.enter") == 1
    assert value(samples, "streamsrv_zone_occupancy", camera="north", zone="all", label="person") == 1
    assert value(samples, "streamsrv_zone_occupancy", camera="north", zone="all", label="car") == 0
    assert value(samples, "streamsrv_frame_age_seconds_count", camera="north") == 2
    assert value(samples, "streamsrv_inference_batch_size_count") == 2
    assert not any("://" in v for s in samples for v in s.labels.values()), "no URL in any label"


def test_a_removed_cameras_series_disappear(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    server.feed(frame_result("north", tracks(), ts=0.0))

    assert http.delete("/api/cameras/north").status_code == 204

    assert {s.labels["camera"] for s in scrape(http) if "camera" in s.labels} == {"hall"}


def test_camera_snapshot_draws_the_latest_frame(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    assert http.get("/api/cameras/north/snapshot.jpg").status_code == 503, "no picture yet"
    result = frame_result("north", tracks(track(1, (100, 100, 200, 400))), ts=0.0)
    server.set_frame("north", (result.frame, np.zeros((720, 1280, 3), np.uint8)))
    server.feed(result)

    response = http.get("/api/cameras/north/snapshot.jpg")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.any(), "the overlay is drawn on the black frame"
    assert http.get("/api/cameras/nobody/snapshot.jpg").status_code == 404
    assert http.get("/api/cameras/hall/snapshot.jpg").status_code == 503, "disabled: no picture"


def test_preview_settings_and_stats(http: TestClient) -> None:
    assert set(http.get("/api/preview/settings").json()) == {"fps", "ice_servers"}
    stats = http.get("/api/preview/stats").json()
    assert (stats["feeds"], stats["viewers"], stats["webrtc_peers"]) == (0, 0, 0)


def test_detect_refuses_what_it_cannot_take(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    ok, png = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    assert ok

    def detect(name: str, data: bytes, content_type: str) -> tuple[int, str]:
        response = http.post("/api/detect", files={"file": (name, data, content_type)})
        return response.status_code, response.text

    assert detect("a.txt", b"hello", "text/plain")[0] == 415
    assert detect("a.png", b"", "image/png")[0] == 422
    assert detect("a.png", b"not an image at all", "image/png")[0] == 415
    assert detect("a.jpg", png.tobytes(), "image/jpeg") == (415, '{"detail":"a.jpg: sent as image/jpeg but it is PNG"}')
    status, text = detect("a.png", png.tobytes(), "image/png")
    assert status == 503, "the fake server has no inference loop to take the image"
    server.health = replace(server.health, model_loaded=False)
    status, text = detect("a.png", png.tobytes(), "image/png")
    assert status == 503 and "not loaded" in text
