"""API key and credential hygiene, against the real server with JSON logs and cameras that have passwords.

Every ``/api`` operation in the OpenAPI schema (cameras, rules, probe, previews, events) must refuse a request
without the key or with a wrong one; health, readiness, metrics and the docs stay open. Camera passwords must
never appear in a response or in anything the server logs, including the errors of a camera that cannot connect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.processes import RtspServer, RtspServerFactory, free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.rtsp]

API_KEY = "test-api-key-5d2a9e"
SECRET = "hunter2-b7f0"  # every camera password in this module
PATH_VALUES = {"camera_id": "gate", "name": "mid", "event_id": "1", "session_id": "1"}


@pytest.fixture(scope="module")
def rtsp(rtsp_server_factory: RtspServerFactory, clip_360p: Path) -> RtspServer:
    return rtsp_server_factory(mounts={"cam360": clip_360p})


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path, rtsp: RtspServer) -> AppServer:
    return module_app_factory(
        model_section(person_model)
        + f"""server: {{api_key: "${{STREAMSRV_TEST_API_KEY}}", log_json: true}}
cameras:
  - {{id: gate, url: "rtsp://admin:{SECRET}@127.0.0.1:{rtsp.port}/cam360", detect_fps: 1}}
  - id: dead
    url: rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/cam
    reconnect: {{initial_s: 0.2, max_s: 1}}
""",
        env={"STREAMSRV_TEST_API_KEY": API_KEY},
        ready=False,
    )


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client(api_key=API_KEY) as client:
        yield client


def api_operations(http: httpx.Client) -> list[tuple[str, str]]:
    schema = http.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path))
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for method in item
    ]


def test_health_metrics_and_docs_need_no_key(app: AppServer) -> None:
    with app.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/readyz").status_code in (200, 503)
        assert anonymous.get("/metrics").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200
        assert anonymous.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong-key"}},
        {"headers": {"Authorization": f"Bearer {API_KEY}x"}},
        {"headers": {"Authorization": f"Basic {API_KEY}"}},
        {"params": {"token": "wrong-key"}},
    ],
    ids=["none", "wrong", "longer", "basic-scheme", "wrong-query-token"],
)
def test_every_api_operation_refuses_a_missing_or_wrong_key(
    app: AppServer, http: httpx.Client, credentials: dict[str, Any]
) -> None:
    operations = api_operations(http)
    assert len(operations) > 20

    with httpx.Client(base_url=app.base_url, timeout=10) as anonymous:
        for method, path in operations:
            response = anonymous.request(
                method, path, json={} if method in ("POST", "PUT", "PATCH") else None, **credentials
            )
            assert response.status_code == 401, f"{method} {path}: {response.status_code} {response.text[:200]}"
            assert response.headers["www-authenticate"] == "Bearer"

    assert [c["id"] for c in http.get("/api/cameras").json()] == ["gate", "dead"], "nothing changed"


def test_the_right_key_is_accepted(http: httpx.Client) -> None:
    assert http.get("/api/cameras").status_code == 200
    created = http.post("/api/cameras", json={"id": "tmp", "url": "rtsp://127.0.0.1:1/x", "enabled": False})
    assert created.status_code == 201
    assert http.delete("/api/cameras/tmp").status_code == 204


def test_credentials_never_appear_in_responses(http: httpx.Client, app: AppServer, rtsp: RtspServer) -> None:
    wait_for(lambda: http.get("/api/cameras/dead").json()["error"] is not None, 60, "dead's connection error", app)
    other = f"rtsp://admin:{SECRET}@127.0.0.1:{rtsp.port}/cam360"
    responses = [
        http.get("/api/cameras"),
        http.get("/api/cameras/gate"),
        http.get("/api/cameras/dead"),
        http.get("/api/cameras/dead/stats"),
        http.post("/api/cameras", json={"id": "side", "url": other, "detect_fps": 1}),
        http.patch("/api/cameras/side", json={"detect_fps": 2}),
        http.post("/api/cameras", json={"id": "side", "url": other}),  # 409
        http.post("/api/cameras", json={"id": "bad", "url": f"ftp://admin:{SECRET}@host/x"}),  # 422 echoes input
        http.patch("/api/cameras/side", json={"url": f"rtsp://admin:{SECRET}@host/x", "detect_fps": 0}),  # 422
        http.post("/api/probe", json={"url": other}),
        http.post("/api/probe", json={"url": f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/x"}),
        http.get("/metrics"),
        http.get("/openapi.json"),
        http.get("/readyz"),
    ]

    statuses = [r.status_code for r in responses]
    assert statuses[4:9] == [201, 200, 409, 422, 422]
    for response in responses:
        assert SECRET not in response.text, f"{response.request.method} {response.request.url}: {response.text}"
    assert "admin:***@" in responses[2].text and "admin:***@" in responses[3].text
    assert http.delete("/api/cameras/side").status_code == 204


def test_credentials_and_the_key_never_appear_in_logs(app: AppServer) -> None:
    log = app.log()

    assert SECRET not in log
    assert API_KEY not in log
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]
    assert any(m.startswith("camera dead: ") and "admin:***@" in m for m in messages), "the redacted error is logged"
    assert any(m.startswith("refused GET /api/cameras") for m in messages)
    assert any(m.startswith("camera side added: rtsp://admin:***@") for m in messages)
