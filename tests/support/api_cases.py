"""Requests the API must refuse, shared by the in-process API tests (tests/test_app_*.py, fake server) and the
end-to-end ones (tests/e2e/, ``streamsrv serve``), so both check the same cases with the same expectations."""

from __future__ import annotations

from typing import Any

import httpx

# (body of POST /api/cameras, the field the 422 names, what its message says)
BAD_CAMERAS: list[tuple[dict[str, Any], str, str]] = [
    ({"id": "x", "url": "ftp://cam/1"}, "url", "unsupported URL scheme 'ftp'"),
    ({"id": "x", "url": "rtsp://cam/1", "detect_fps": 0}, "detect_fps", "greater than 0"),
    ({"id": "x", "url": "rtsp://cam/1", "detect_fps": -3}, "detect_fps", "greater than 0"),
    ({"id": "x", "url": "rtsp://cam/1", "fps": 5}, "fps", "Extra inputs are not permitted"),
    ({"id": "x y", "url": "rtsp://cam/1"}, "id", "should match pattern"),
    ({"id": "../etc", "url": "rtsp://cam/1"}, "id", "should match pattern"),
    ({"id": "café", "url": "rtsp://cam/1"}, "id", "should match pattern"),
    ({"url": "rtsp://cam/1"}, "id", "Field required"),
    ({"id": "x", "url": "rtsp://a:***@cam/1"}, "url", "redacted password"),
    ({"id": "x", "url": "rtsp://h/s\r\nx"}, "url", "control characters"),
    ({"id": "x", "url": "file:///etc/passwd"}, "url", "outside server.allowed_file_dirs"),
    ({"id": "x", "url": "/etc/passwd"}, "url", "outside server.allowed_file_dirs"),
    ({"id": "x", "url": "../../../../../../etc/passwd"}, "url", "outside server.allowed_file_dirs"),
    ({"id": "x", "url": "rtsp://cam/1", "rules": "zones/missing.yaml"}, "rules", "cannot read rules file"),
    (
        {
            "id": "x",
            "url": "rtsp://cam/1",
            "rules": {"zones": [{"name": "z", "polygon": [[0, 0], [9, 9], [0, 9], [9, 0]]}]},
        },
        "rules",
        "polygon is not valid",
    ),
    ({"id": "x", "url": "rtsp://cam/1", "motion": {"max_interval_s": 5}}, "motion", "exceeds tracker.lost_track_s"),
    ({"id": "x", "url": "rtsp://cam/1", "priority": "urgent"}, "priority", "'high', 'normal' or 'low'"),
    ({"id": "x", "url": "rtsp://cam/1", "max_frame_age_ms": 0}, "max_frame_age_ms", "greater than 0"),
]


def assert_refused_naming(response: httpx.Response, field: str, says: str) -> None:
    """A 422 with one error, on ``field`` of the body, whose message contains ``says``."""
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][:2] == ["body", field]
    assert says in error["msg"]


def zone_create_replace_delete(http: httpx.Client, width: int, height: int, others: list[str]) -> None:
    """Camera ``hall``'s zones through their life: created (a second time: 409), replaced (a rename: 422, an
    unknown zone: 404), deleted (twice: 404), leaving the zones ``others``. ``width``/``height``: the frame's size."""
    right = {
        "name": "right",
        "polygon": [[width // 2, 0], [width, 0], [width, height], [width // 2, height]],
        "labels": ["person"],
    }
    assert http.post("/api/cameras/hall/zones", json=right).status_code == 201
    duplicate = http.post("/api/cameras/hall/zones", json=right)
    assert duplicate.status_code == 409
    assert duplicate.json()["detail"] == "name: zone 'right' already exists"

    smaller = {**right, "polygon": [[width * 5 // 8, 0], [width, 0], [width, height]]}
    assert http.put("/api/cameras/hall/zones/right", json=smaller).status_code == 200
    assert http.get("/api/cameras/hall/zones/right").json()["polygon"] == smaller["polygon"]
    renamed = http.put("/api/cameras/hall/zones/right", json={**smaller, "name": "east"})
    assert renamed.status_code == 422
    assert renamed.json()["detail"][0]["loc"] == ["body", "name"]
    assert http.put("/api/cameras/hall/zones/nowhere", json={**smaller, "name": "nowhere"}).status_code == 404

    assert http.delete("/api/cameras/hall/zones/right").status_code == 204
    assert http.get("/api/cameras/hall/zones/right").status_code == 404
    assert http.delete("/api/cameras/hall/zones/right").status_code == 404
    assert [z["name"] for z in http.get("/api/cameras/hall/zones").json()] == others
