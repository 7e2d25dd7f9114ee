"""The camera registry and stats through the real app, in-process on a ``FakeServer`` (no process, no model).

What tests/e2e/test_api_cameras.py checks of the API surface against a running server (validation naming the
field, conflicts, not found, oversized bodies, what is saved), here in milliseconds; that the cameras really run
stays with the end-to-end tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from streamsrv.config import load_config
from streamsrv.types import CameraState
from tests.support.api_cases import BAD_CAMERAS, assert_refused_naming
from tests.support.fake_server import FakeServer, app_config, serve_in_process

PASSWORD = "cam-pw-4e1d"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        cameras=[
            {"id": "north", "url": "rtsp://cam/north", "detect_fps": 1},
            {"id": "south", "name": "South gate", "url": f"rtsp://viewer:{PASSWORD}@cam/south"},
            {"id": "hall", "url": "rtsp://cam/hall", "enabled": False},
        ],
        jobs={"spool_dir": str(tmp_path / "spool")},
        server={"allowed_file_dirs": [str(tmp_path / "media")]},  # so server files are refused as outside it
    )
    with serve_in_process(cfg) as served:
        yield served


@pytest.fixture
def http(app: tuple[TestClient, FakeServer]) -> TestClient:
    return app[0]


def ids(http: TestClient) -> list[str]:
    return [c["id"] for c in http.get("/api/cameras").json()]


def test_lists_cameras_with_their_state_and_redacted_urls(http: TestClient) -> None:
    cameras = {c["id"]: c for c in http.get("/api/cameras").json()}

    assert list(cameras) == ["north", "south", "hall"]
    assert cameras["south"]["name"] == "South gate" and cameras["north"]["name"] == "north"
    assert cameras["south"]["url"] == "rtsp://viewer:***@cam/south"
    assert [cameras[c]["state"] for c in cameras] == ["online", "online", "disabled"]
    assert PASSWORD not in http.get("/api/cameras").text + http.get("/api/cameras/south").text


def test_add_get_and_remove_a_camera(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app

    added = http.post("/api/cameras", json={"id": "east", "url": f"rtsp://admin:{PASSWORD}@cam/east"})

    assert added.status_code == 201, added.text
    assert added.json()["url"] == "rtsp://admin:***@cam/east" and added.json()["state"] == "online"
    assert server.camera_config("east").url == f"rtsp://admin:{PASSWORD}@cam/east", "the server got the real one"
    assert http.get("/api/cameras/east").json()["id"] == "east"
    assert "east" in server.running_camera_ids()

    assert http.delete("/api/cameras/east").status_code == 204
    assert http.get("/api/cameras/east").status_code == 404
    assert http.get("/api/cameras/east/stats").status_code == 404
    assert http.delete("/api/cameras/east").status_code == 404
    assert ids(http) == ["north", "south", "hall"]


def test_a_disabled_camera_is_listed_without_stats(http: TestClient) -> None:
    assert (
        http.post("/api/cameras", json={"id": "spare", "url": "rtsp://cam/x", "enabled": False}).json()["state"]
        == "disabled"
    )
    stats = http.get("/api/cameras/spare/stats")
    assert stats.status_code == 404 and "disabled" in stats.json()["detail"]


def test_stats_of_a_running_camera(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    stats = http.get("/api/cameras/north/stats")

    assert stats.status_code == 200
    assert stats.json()["camera_id"] == "north" and stats.json()["state"] == "online"
    assert {"frames_processed", "processed_fps", "dropped_stale", "frame_age_ms_p95"} <= set(stats.json())
    assert http.get("/api/cameras/nobody/stats").status_code == 404

    server.set_state("north", CameraState.ERROR, "connection refused")
    north = http.get("/api/cameras/north").json()
    assert (north["state"], north["error"]) == ("error", "connection refused")
    assert http.get("/api/cameras/north/stats").json()["state"] == "error"


def test_patch_changes_only_what_it_names_and_keeps_the_secret(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    south = http.get("/api/cameras/south").json()

    # The redacted URL a client was shown, sent back unchanged, means "keep the real one".
    patched = http.patch("/api/cameras/south", json={"detect_fps": 2, "url": south["url"]})

    assert patched.status_code == 200, patched.text
    assert patched.json()["detect_fps"] == 2 and patched.json()["name"] == "South gate"
    assert server.camera_config("south").url == f"rtsp://viewer:{PASSWORD}@cam/south"
    assert http.patch("/api/cameras/north", json={"name": "North stairs"}).json()["name"] == "North stairs"
    assert http.patch("/api/cameras/nobody", json={"name": "x"}).status_code == 404
    assert ids(http) == ["north", "south", "hall"], "a changed camera keeps its place"
    assert http.patch("/api/cameras/north", json={"enabled": False}).json()["state"] == "disabled"


def test_put_replaces_a_camera(http: TestClient) -> None:
    north = http.get("/api/cameras/north").json()
    body = {k: v for k, v in north.items() if k not in ("state", "error")}
    body["rules"] = {"lines": [{"name": "mid", "points": [[0, 180], [640, 180]]}]}

    replaced = http.put("/api/cameras/north", json=body)

    assert replaced.status_code == 200, replaced.text
    assert http.get("/api/cameras/north/lines").json()[0]["name"] == "mid"
    mismatch = http.put("/api/cameras/north", json={**body, "id": "elsewhere"})
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"][0]["loc"] == ["body", "id"]
    assert http.put("/api/cameras/nobody", json={**body, "id": "nobody"}).status_code == 404


@pytest.mark.parametrize(("body", "field", "says"), BAD_CAMERAS)
def test_bad_camera_is_refused_naming_the_field(http: TestClient, body: dict[str, Any], field: str, says: str) -> None:
    assert_refused_naming(http.post("/api/cameras", json=body), field, says)
    assert http.get("/api/cameras/x").status_code == 404


def test_a_refused_password_is_never_echoed(http: TestClient) -> None:
    response = http.post("/api/cameras", json={"id": "bad", "url": f"ftp://admin:{PASSWORD}@host/x"})

    assert response.status_code == 422
    assert PASSWORD not in response.text and "admin:***@" in response.text


def test_duplicate_id_is_a_conflict(http: TestClient) -> None:
    response = http.post("/api/cameras", json={"id": "north", "url": "rtsp://cam/1"})

    assert response.status_code == 409
    assert response.json()["detail"] == "id: camera 'north' already exists"


def test_bad_patch_is_refused_and_changes_nothing(http: TestClient) -> None:
    before = http.get("/api/cameras/south").json()

    for body, field in [({"detect_fps": 0}, "detect_fps"), ({"url": None}, "url"), ({"id": "other"}, "id")]:
        response = http.patch("/api/cameras/south", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:2] == ["body", field]

    assert http.get("/api/cameras/south").json() == before


def test_oversized_bodies_are_refused(http: TestClient) -> None:
    big = b'{"id": "x", "url": "' + b"a" * 1_100_000 + b'"}'

    declared = http.post("/api/cameras", content=big, headers={"content-type": "application/json"})
    streamed = http.post(
        "/api/cameras",
        content=(big[i : i + 65536] for i in range(0, len(big), 65536)),  # chunked: no Content-Length
        headers={"content-type": "application/json"},
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert "server.max_body_bytes" in response.json()["detail"]
    assert "x" not in ids(http)


def write_config(path: Path, persist: bool) -> Path:
    path.write_text(
        f"server: {{persist: {str(persist).lower()}}}\ncameras:\n  - {{id: north, url: 'rtsp://cam/north'}}\n"
    )
    return path


def test_without_persist_changes_stay_in_memory(tmp_path: Path) -> None:
    config = write_config(tmp_path / "streamsrv.yaml", persist=False)
    before = config.read_text()
    cfg = load_config(config)

    with serve_in_process(cfg, config_path=config) as (http, _):
        assert http.post("/api/cameras", json={"id": "east", "url": "rtsp://cam/east"}).status_code == 201
        assert (
            http.post("/api/cameras/north/zones", json={"name": "z", "polygon": [[0, 0], [9, 0], [0, 9]]}).status_code
            == 201
        )

    assert config.read_text() == before
    assert not config.with_name("streamsrv.yaml.bak").exists()


def test_with_persist_changes_are_written_to_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "streamsrv.yaml", persist=True)
    cfg = load_config(config)

    with serve_in_process(cfg, config_path=config) as (http, _):
        assert http.post("/api/cameras", json={"id": "east", "url": "rtsp://cam/east"}).status_code == 201
        assert http.patch("/api/cameras/north", json={"detect_fps": 2}).status_code == 200

    saved = {c["id"]: c for c in yaml.safe_load(config.read_text())["cameras"]}
    assert list(saved) == ["north", "east"]
    assert saved["north"]["detect_fps"] == 2
    assert config.with_name("streamsrv.yaml.bak").exists()
