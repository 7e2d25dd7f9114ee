"""Zones and tripwires over HTTP, against the real server running the real model on the concourse clip.

A tripwire added at runtime across the middle of the 360p clip (people walk up and down it) must start
counting crossings; edits are saved to the camera's rules file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streamsrv.config.rules import load_rules
from tests.support.api_cases import zone_create_replace_delete
from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

LEFT = {"name": "left", "polygon": [[0, 0], [320, 0], [320, 360], [0, 360]]}
MIDLINE = {
    "name": "mid",
    "points": [[0, 180], [640, 180]],
    "left_to_right": "down",
    "right_to_left": "up",
    "labels": ["person"],
}
RULES_FILE = f"zones: [{LEFT}]\n".replace("'", "")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, person_model: Path, clip_360p: Path) -> Path:
    root = tmp_path_factory.mktemp("rules")
    (root / "zones").mkdir()
    (root / "zones" / "hall.yaml").write_text(RULES_FILE)
    (root / "zones" / "annex.yaml").write_text(RULES_FILE)
    (root / "streamsrv.yaml").write_text(
        model_section(person_model)
        + f"""cameras:
  - {{id: hall, url: "{clip_360p}", loop: true, detect_fps: 3, rules: zones/hall.yaml}}
  - {{id: annex, url: "{clip_360p}", enabled: false, rules: zones/annex.yaml}}
  - {{id: annex2, url: "{clip_360p}", enabled: false, rules: zones/annex.yaml}}
"""
    )
    return root


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, root: Path) -> AppServer:
    return module_app_factory(root / "streamsrv.yaml")


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


def crossings(http: httpx.Client, line: str = "mid") -> int:
    counts = http.get("/api/cameras/hall/counts").json()["lines"].get(line, {})
    return sum(n for by_label in counts.values() for n in by_label.values())


def test_rules_come_from_the_cameras_rules_file(http: httpx.Client) -> None:
    rules = http.get("/api/cameras/hall/rules").json()

    assert [z["name"] for z in rules["zones"]] == ["left"]
    assert rules["lines"] == []
    assert http.get("/api/cameras/hall/zones/left").json()["polygon"] == LEFT["polygon"]
    assert http.get("/api/cameras/hall/lines").json() == []


def test_a_tripwire_added_at_runtime_counts_people(http: httpx.Client, app: AppServer, root: Path) -> None:
    response = http.post("/api/cameras/hall/lines", json=MIDLINE)

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "mid"
    saved = load_rules(root / "zones" / "hall.yaml")
    assert [z.name for z in saved.zones] == ["left"] and [ln.name for ln in saved.lines] == ["mid"]
    wait_for(lambda: crossings(http) > 0, 120, "people crossing the midline", app)
    directions = http.get("/api/cameras/hall/counts").json()["lines"]["mid"]
    assert set(directions) <= {"down", "up"}


def test_replacing_a_line_keeps_its_counts(http: httpx.Client) -> None:
    before = crossings(http)
    assert before > 0

    response = http.put("/api/cameras/hall/lines/mid", json={**MIDLINE, "hysteresis": 0.2})

    assert response.status_code == 200, response.text
    assert http.get("/api/cameras/hall/lines/mid").json()["hysteresis"] == 0.2
    assert crossings(http) >= before


def test_zone_create_replace_delete(http: httpx.Client) -> None:
    zone_create_replace_delete(http, 640, 360, others=["left"])


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("zones", {"name": "bow", "polygon": [[0, 0], [9, 9], [0, 9], [9, 0]]}, "polygon is not valid"),
        ("zones", {"name": "two", "polygon": [[0, 0], [9, 9]]}, "polygon: List should have at least 3 items"),
        ("zones", {"name": "n", "units": "norm", "polygon": [[0, 0], [2, 0], [0, 1]]}, "within 0..1"),
        ("zones", {"name": "n", "polygon": [[0, 0], [9, 0], [0, 9]], "colour": "red"}, "colour: Extra inputs"),
        ("lines", {"name": "dup", "points": [[0, 0], [0, 0]]}, "two consecutive points are equal"),
        ("lines", {"name": "bad name!", "points": [[0, 0], [5, 5]]}, "name: String should match pattern"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(http: httpx.Client, path: str, body: dict[str, Any], says: str) -> None:
    response = http.post(f"/api/cameras/hall/{path}", json=body)

    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert says in ".".join(str(p) for p in error["loc"][1:]) + ": " + error["msg"]


def test_whole_rule_sets_are_validated_as_a_whole(http: httpx.Client) -> None:
    current = http.get("/api/cameras/hall/rules").json()

    slow_relink = http.put("/api/cameras/hall/rules", json={**current, "relink_s": 5, "grace_s": 3})
    twice = http.put("/api/cameras/hall/rules", json={**current, "zones": [LEFT, LEFT]})

    assert slow_relink.status_code == 422 and "relink_s" in slow_relink.json()["detail"][0]["msg"]
    assert twice.status_code == 422 and "duplicate zone name(s): left" in twice.json()["detail"][0]["msg"]
    assert http.get("/api/cameras/hall/rules").json() == current


def test_editing_a_shared_rules_file_writes_inline_rules_instead(http: httpx.Client, root: Path) -> None:
    shared = (root / "zones" / "annex.yaml").read_text()

    response = http.put("/api/cameras/annex/rules", json={"lines": [MIDLINE]})

    assert response.status_code == 200, response.text
    assert (root / "zones" / "annex.yaml").read_text() == shared, "the other camera's rules are untouched"
    cameras = {c["id"]: c for c in yaml.safe_load((root / "streamsrv.yaml").read_text())["cameras"]}
    assert cameras["annex"]["rules"]["lines"][0]["name"] == "mid"
    assert cameras["annex2"]["rules"] == "zones/annex.yaml"
    assert [z["name"] for z in http.get("/api/cameras/annex2/zones").json()] == ["left"]
    assert cameras["hall"]["rules"] == "zones/hall.yaml", "a camera's own rules file is edited in place"


def test_rules_of_an_unknown_camera_are_not_found(http: httpx.Client) -> None:
    assert http.get("/api/cameras/nobody/rules").status_code == 404
    assert http.get("/api/cameras/nobody/counts").status_code == 404
    assert http.post("/api/cameras/nobody/zones", json=LEFT).status_code == 404
    assert http.delete("/api/cameras/nobody/lines/mid").status_code == 404
