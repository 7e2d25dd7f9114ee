"""The API key through the real app, in-process on a ``FakeServer``: every ``/api`` operation in the OpenAPI schema
refuses a missing or wrong key with 401, the WebSocket too; health, readiness, metrics and the docs stay open.

The same checks as tests/e2e/test_api_security.py, which also watches the server's logs for secrets; here a router
that forgets ``Authenticated`` fails in a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from streamsrv.types import CameraState
from tests.support.fake_server import FakeServer, app_config, serve_in_process

API_KEY = "test-api-key-5d2a9e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PATH_VALUES = {"camera_id": "gate", "name": "mid", "event_id": "1", "session_id": "1"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        server={"api_key": API_KEY},
        cameras=[{"id": "gate", "url": "rtsp://admin:pw@cam/gate"}, {"id": "dead", "url": "rtsp://cam/dead"}],
        jobs={"spool_dir": str(tmp_path / "spool")},
    )
    with serve_in_process(cfg) as served:  # no key by default: each test says what it sends
        yield served


@pytest.fixture
def http(app: tuple[TestClient, FakeServer]) -> TestClient:
    return app[0]


def api_operations(http: TestClient) -> list[tuple[str, str]]:
    schema = http.get("/openapi.json").json()
    return [
        (method.upper(), re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path))
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for method in item
    ]


def test_health_metrics_and_docs_need_no_key(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    assert http.get("/metrics").status_code == 200
    assert http.get("/openapi.json").status_code == 200
    assert http.get("/docs").status_code == 200


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
def test_every_api_operation_refuses_a_missing_or_wrong_key(http: TestClient, credentials: dict[str, Any]) -> None:
    operations = api_operations(http)
    assert len(operations) > 20

    for method, path in operations:
        response = http.request(method, path, json={} if method in ("POST", "PUT", "PATCH") else None, **credentials)
        assert response.status_code == 401, f"{method} {path}: {response.status_code} {response.text[:200]}"
        assert response.headers["www-authenticate"] == "Bearer"

    assert [c["id"] for c in http.get("/api/cameras", headers=AUTH).json()] == ["gate", "dead"], "nothing changed"


def test_the_right_key_is_accepted_as_a_header_or_a_token_parameter(http: TestClient) -> None:
    assert http.get("/api/cameras", headers=AUTH).status_code == 200
    assert http.get("/api/events", params={"token": API_KEY}).status_code == 200
    created = http.post(
        "/api/cameras", headers=AUTH, json={"id": "tmp", "url": "rtsp://127.0.0.1:1/x", "enabled": False}
    )
    assert created.status_code == 201
    assert http.delete("/api/cameras/tmp", headers=AUTH).status_code == 204


@pytest.mark.parametrize("query", ["", "?token=wrong-key"], ids=["none", "wrong"])
def test_the_event_websocket_refuses_a_missing_or_wrong_key(http: TestClient, query: str) -> None:
    with pytest.raises(WebSocketDenialResponse) as refused, http.websocket_connect(f"/api/events/ws{query}"):
        pass

    assert refused.value.status_code == 401
    assert refused.value.headers["www-authenticate"] == "Bearer"


def test_the_event_websocket_takes_the_key_as_a_token_parameter(app: tuple[TestClient, FakeServer]) -> None:
    http, server = app
    server.set_state("dead", CameraState.ERROR, "connection refused")

    with http.websocket_connect(f"/api/events/ws?token={API_KEY}&camera=dead&since=0") as socket:
        assert '"camera.online"' in socket.receive_text()
        assert '"camera.offline"' in socket.receive_text()


def test_a_refused_form_field_with_surrogates_is_a_422_not_a_500(http: TestClient) -> None:
    """The fuzz test's find: surrogates in a refused form field reach the 422 body, which must still be UTF-8."""
    boundary = "b0undary"
    parts = [(b"url", b"rtsp://cam/1"), (b"rules", b'[{"\\ud8d9\\uded4": true}]')]
    part = b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
    body = b"".join(part % (boundary.encode(), name, value) for name, value in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    answer = http.post("/api/jobs", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert "rules" in answer.text
