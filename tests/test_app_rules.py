"""Zones, tripwires and counts through the real app, in-process on a ``FakeServer``: its real rule engines count
the tracks a test feeds them, so edits and counts are checked as tests/e2e/test_api_rules.py does against the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from streamsrv.config.rules import load_rules
from tests.support.api_cases import zone_create_replace_delete
from tests.support.builders import frame_result, track, tracks
from tests.support.fake_server import FakeServer, app_config, serve_in_process

LEFT = {"name": "left", "polygon": [[0, 0], [640, 0], [640, 720], [0, 720]]}
MIDLINE = {
    "name": "mid",
    "points": [[0, 360], [1280, 360]],
    "left_to_right": "down",
    "right_to_left": "up",
    "labels": ["person"],
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    for name in ("hall", "annex"):
        (tmp_path / "zones" / f"{name}.yaml").write_text(
            "zones: [{name: left, polygon: [[0, 0], [640, 0], [640, 720], [0, 720]]}]\n"
        )
    return tmp_path


@pytest.fixture
def app(root: Path) -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        cameras=[
            {"id": "hall", "url": "rtsp://cam/hall", "rules": "zones/hall.yaml"},
            {"id": "annex", "url": "rtsp://cam/annex", "enabled": False, "rules": "zones/annex.yaml"},
            {"id": "annex2", "url": "rtsp://cam/annex2", "enabled": False, "rules": "zones/annex.yaml"},
        ],
        server={"persist": True},
        jobs={"spool_dir": str(root / "spool")},
    )
    cfg.base_dir = root
    config = root / "streamsrv.yaml"
    config.write_text("cameras: []\n")
    with serve_in_process(cfg, config_path=config) as served:
        yield served


@pytest.fixture
def http(app: tuple[TestClient, FakeServer]) -> TestClient:
    return app[0]


def walk_down(server: FakeServer, camera_id: str, start_s: float = 0.0) -> None:
    """One person walks from the top of the left half to the bottom, crossing y=360."""
    for i, y in enumerate(range(100, 700, 50)):
        server.feed(frame_result(camera_id, tracks(track(1, (300, y - 80, 360, y + 80))), ts=start_s + i * 0.2))


def test_rules_come_from_the_cameras_rules_file(http: TestClient) -> None:
    rules = http.get("/api/cameras/hall/rules").json()

    assert [z["name"] for z in rules["zones"]] == ["left"]
    assert rules["lines"] == []
    assert http.get("/api/cameras/hall/zones/left").json()["polygon"] == LEFT["polygon"]
    assert http.get("/api/cameras/hall/lines").json() == []


def test_an_added_tripwire_counts_and_is_saved(app: tuple[TestClient, FakeServer], root: Path) -> None:
    http, server = app

    response = http.post("/api/cameras/hall/lines", json=MIDLINE)
    walk_down(server, "hall")

    assert response.status_code == 201, response.text
    saved = load_rules(root / "zones" / "hall.yaml")
    assert [z.name for z in saved.zones] == ["left"] and [ln.name for ln in saved.lines] == ["mid"]
    counts = http.get("/api/cameras/hall/counts").json()
    assert counts == {"occupancy": {"left": {"person": 1}}, "lines": {"mid": {"down": {"person": 1}, "up": {}}}}


def test_replacing_a_line_keeps_its_counts(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    http.post("/api/cameras/hall/lines", json=MIDLINE)
    walk_down(server, "hall")

    response = http.put("/api/cameras/hall/lines/mid", json={**MIDLINE, "hysteresis": 0.2})

    assert response.status_code == 200, response.text
    assert http.get("/api/cameras/hall/lines/mid").json()["hysteresis"] == 0.2
    assert http.get("/api/cameras/hall/counts").json()["lines"]["mid"]["down"] == {"person": 1}


def test_zone_create_replace_delete(http: TestClient) -> None:
    zone_create_replace_delete(http, 1280, 720, others=["left"])


def test_line_create_and_delete(http: TestClient) -> None:
    assert http.post("/api/cameras/hall/lines", json=MIDLINE).status_code == 201
    assert http.post("/api/cameras/hall/lines", json=MIDLINE).json()["detail"] == "name: line 'mid' already exists"
    assert http.delete("/api/cameras/hall/lines/mid").status_code == 204
    assert http.get("/api/cameras/hall/lines/mid").status_code == 404
    assert http.get("/api/cameras/hall/counts").json()["lines"] == {}


def circle(n: int, radius: float = 150.0) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [[320 + radius * float(np.cos(a)), 180 + radius * float(np.sin(a))] for a in angles]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("zones", {"name": "bow", "polygon": [[0, 0], [9, 9], [0, 9], [9, 0]]}, "polygon is not valid"),
        ("zones", {"name": "two", "polygon": [[0, 0], [9, 9]]}, "polygon: List should have at least 3 items"),
        ("zones", {"name": "n", "units": "norm", "polygon": [[0, 0], [2, 0], [0, 1]]}, "within 0..1"),
        ("zones", {"name": "n", "polygon": [[0, 0], [9, 0], [0, 9]], "colour": "red"}, "colour: Extra inputs"),
        ("zones", {"name": "huge", "polygon": circle(10_000)}, "polygon: List should have at most"),
        ("zones", {"name": "flat", "polygon": [[0, 0], [5, 5], [10, 10]]}, "polygon is not valid"),
        ("zones", {"name": "far", "polygon": [[0, 0], [6e307, 0], [0, 6e307]]}, "at most 100000"),
        ("zones", {"name": "../z", "polygon": [[0, 0], [10, 0], [0, 10]]}, "name"),
        ("lines", {"name": "dup", "points": [[0, 0], [0, 0]]}, "two consecutive points are equal"),
        ("lines", {"name": "bad name!", "points": [[0, 0], [5, 5]]}, "name: String should match pattern"),
        ("lines", {"name": "back", "points": [[0, 0], [10, 0], [5, 0]]}, "crosses itself"),
        ("lines", {"name": "one", "points": [[0, 0]]}, "points"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(http: TestClient, path: str, body: dict[str, Any], says: str) -> None:
    response = http.post(f"/api/cameras/hall/{path}", json=body)

    assert response.status_code == 422, response.text[:500]
    error = response.json()["detail"][0]
    assert says in ".".join(str(p) for p in error["loc"][1:]) + ": " + error["msg"]
    assert [z["name"] for z in http.get("/api/cameras/hall/zones").json()] == ["left"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"name": "z", "polygon": [[0, 0], [10, 0], [NaN, 10]]}', "finite"),
        (b'{"name": "z", "polygon": [[0, 0], [9, 0], [0, 9]], "loiter_s": 1e999}', "finite"),
        (b'{"name": "z", "polygon": [[0, 0],', "JSON decode error"),
        (b"\xff\xfe{}", "JSON decode error"),
    ],
    ids=["nan", "1e999", "cut-short", "not-utf8"],
)
def test_non_finite_numbers_and_broken_json_are_refused(http: TestClient, body: bytes, says: str) -> None:
    response = http.post("/api/cameras/hall/zones", content=body, headers={"content-type": "application/json"})

    assert response.status_code in (400, 422), response.text
    assert says in response.text


def test_whole_rule_sets_are_validated_as_a_whole(http: TestClient) -> None:
    current = http.get("/api/cameras/hall/rules").json()

    slow_relink = http.put("/api/cameras/hall/rules", json={**current, "relink_s": 5, "grace_s": 3})
    twice = http.put("/api/cameras/hall/rules", json={**current, "zones": [LEFT, LEFT]})

    assert slow_relink.status_code == 422 and "relink_s" in slow_relink.json()["detail"][0]["msg"]
    assert twice.status_code == 422 and "duplicate zone name(s): left" in twice.json()["detail"][0]["msg"]
    assert http.get("/api/cameras/hall/rules").json() == current


def test_oversized_rule_bodies_are_refused(http: TestClient) -> None:
    big = {"zones": [{"name": f"z{i}", "polygon": circle(900)} for i in range(60)]}

    response = http.put("/api/cameras/hall/rules", json=big)

    assert response.status_code == 413, response.text[:300]
    assert [z["name"] for z in http.get("/api/cameras/hall/zones").json()] == ["left"]


def test_editing_a_shared_rules_file_writes_inline_rules_instead(http: TestClient, root: Path) -> None:
    shared = (root / "zones" / "annex.yaml").read_text()

    response = http.put("/api/cameras/annex/rules", json={"lines": [MIDLINE]})

    assert response.status_code == 200, response.text
    assert (root / "zones" / "annex.yaml").read_text() == shared, "the other camera's rules are untouched"
    assert http.get("/api/cameras/annex/lines").json()[0]["name"] == "mid"
    cameras = {c["id"]: c for c in yaml.safe_load((root / "streamsrv.yaml").read_text())["cameras"]}
    assert cameras["annex"]["rules"]["lines"][0]["name"] == "mid"
    assert cameras["annex2"]["rules"] == "zones/annex.yaml"
    assert cameras["hall"]["rules"] == "zones/hall.yaml", "a camera's own rules file is edited in place"
    assert [z["name"] for z in http.get("/api/cameras/annex2/zones").json()] == ["left"]


def test_rules_of_an_unknown_camera_are_not_found(http: TestClient) -> None:
    assert http.get("/api/cameras/nobody/rules").status_code == 404
    assert http.put("/api/cameras/nobody/rules", json={}).status_code == 404
    assert http.get("/api/cameras/nobody/counts").status_code == 404
    assert http.get("/api/cameras/nobody/zones").status_code == 404
    assert http.post("/api/cameras/nobody/zones", json=LEFT).status_code == 404
    assert http.delete("/api/cameras/nobody/lines/mid").status_code == 404
    assert http.get("/api/cameras/hall/lines/nowhere").status_code == 404
