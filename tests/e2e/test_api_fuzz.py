"""Property-based requests generated from the live server's OpenAPI schema (schemathesis): never a 5xx.

Valid and invalid inputs for every operation, against the real server with a real camera. In the valid runs
the camera path parameter names that camera, so generated changes reach the registry instead of stopping at a
404; a camera a case deletes is registered again and one a case creates is removed, so decoders never pile up.
Streaming operations (MJPEG, server-sent events) are left out: their body never ends.

Schemathesis's own pytest plugin (``from_fixture``) does not run under pytest 9, so each operation's
strategy is driven with Hypothesis directly. Every 5xx is collected (not raised, which would make Hypothesis
shrink it at the cost of many more requests) and reported with a curl command that reproduces it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.app_server import AppServer, AppServers, model_section

pytestmark = pytest.mark.slow

API_KEY = "fuzz-key-0c41"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
STREAMING = ("multipart/x-mixed-replace", "text/event-stream")
CAMERA = "fuzz"
EXAMPLES_PER_OPERATION_AND_MODE = 6


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path, clip_360p: Path) -> AppServer:
    server = f'server: {{api_key: "{API_KEY}", allowed_file_dirs: ["{clip_360p.parent}"]}}\n'
    return module_app_factory(model_section(person_model) + server)


def _streams(operation: Any) -> bool:
    responses = operation.definition.raw.get("responses", {})
    return any(t in STREAMING for r in responses.values() for t in r.get("content", {}))


def test_no_generated_request_makes_the_server_fail(app: AppServer, clip_360p: Path) -> None:
    camera = {"id": CAMERA, "url": str(clip_360p), "loop": True, "detect_fps": 1}
    schema = schemathesis.openapi.from_url(f"{app.base_url}/openapi.json")
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if not _streams(op)]
    assert len(operations) > 20
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)

    with httpx.Client(base_url=app.base_url, headers=AUTH, timeout=30) as http:
        http.post("/api/cameras", json=camera).raise_for_status()

        def check(case: Any) -> None:
            try:
                response = case.call(headers=AUTH, timeout=30)
            except Exception as exc:  # a dropped connection is as much a failure as a 500
                failures.append(f"{type(exc).__name__}: {exc}\n  {case.as_curl_command(headers=AUTH)}")
                return
            statuses[f"{case.method} {case.path}"][response.status_code] += 1
            if response.status_code >= 500:
                failures.append(f"{response.status_code} {response.text[:300]}\n  {case.as_curl_command(headers=AUTH)}")
            if case.method == "POST" and case.path == "/api/cameras" and response.status_code == 201:
                http.delete(f"/api/cameras/{response.json()['id']}").raise_for_status()
            if http.get(f"/api/cameras/{CAMERA}").status_code == 404:
                http.post("/api/cameras", json=camera).raise_for_status()

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                names = {p.name for p in operation.path_parameters}
                fixed = {"camera_id": CAMERA} if mode is GenerationMode.POSITIVE and "camera_id" in names else None
                run = settings(
                    max_examples=EXAMPLES_PER_OPERATION_AND_MODE,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )(given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed))(check))
                try:
                    run()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, operation.label  # no inputs, so none invalid

    assert len(statuses) == len(operations), "every operation was exercised"
    assert not failures, f"{len(failures)} request(s) made the server fail:\n" + "\n".join(failures)
