"""The camera registry over HTTP, against the real server: real file and RTSP cameras, the real model.

One server runs for the module (loading the model costs seconds): two cameras from its YAML file, one of them
an RTSP camera whose password is an ``${ENV}`` reference. Cameras are added, changed and removed while the
others run; then the server is restarted on the same file and must come back with the same registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.api_cases import BAD_CAMERAS, assert_refused_naming
from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.processes import RtspServer, RtspServerFactory
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.rtsp]

PASSWORD = "pw-from-env-7c1f"  # in the environment only: the file refers to it as ${STREAMSRV_TEST_CAM_PW}
ADDED_PASSWORD = "added-pw-93b2"  # sent through the API
PROCESS_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def rtsp(rtsp_server_factory: RtspServerFactory, clip_360p: Path) -> RtspServer:
    return rtsp_server_factory(mounts={"cam360": clip_360p})


@pytest.fixture(scope="module")
def config_file(
    tmp_path_factory: pytest.TempPathFactory, person_model: Path, rtsp: RtspServer, clip_360p: Path
) -> Path:
    root = tmp_path_factory.mktemp("registry")
    path = root / "streamsrv.yaml"
    path.write_text(
        "# A hand-written config: its comments survive in streamsrv.yaml.bak.\n"
        + model_section(person_model)
        + f"""server: {{allowed_file_dirs: ["{clip_360p.parent}"]}}
cameras:
  - id: north
    url: ${{STREAMSRV_TEST_CLIP}}
    loop: true
    detect_fps: 1
  - id: south
    name: South gate
    url: rtsp://viewer:${{STREAMSRV_TEST_CAM_PW}}@127.0.0.1:{rtsp.port}/cam360
    detect_fps: 1
"""
    )
    return path


@pytest.fixture(scope="module")
def env(clip_360p: Path) -> dict[str, str]:
    return {"STREAMSRV_TEST_CLIP": str(clip_360p), "STREAMSRV_TEST_CAM_PW": PASSWORD}


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, config_file: Path, env: dict[str, str]) -> AppServer:
    return module_app_factory(config_file, env=env)


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


def processed(http: httpx.Client, camera_id: str) -> int:
    response = http.get(f"/api/cameras/{camera_id}/stats")
    response.raise_for_status()
    return int(response.json()["frames_processed"])


def wait_processing(http: httpx.Client, app: AppServer, since: dict[str, int]) -> None:
    """Until every camera in ``since`` has processed more frames than it had then."""
    for camera_id, count in since.items():
        wait_for(lambda c=camera_id, n=count: processed(http, c) > n, PROCESS_TIMEOUT_S, f"{camera_id} > {count}", app)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def by_id(cameras: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in cameras}


def test_cameras_from_the_config_file_run(http: httpx.Client, app: AppServer) -> None:
    cameras = by_id(http.get("/api/cameras").json())

    assert list(cameras) == ["north", "south"]
    assert cameras["south"]["name"] == "South gate"
    assert cameras["south"]["url"].startswith("rtsp://viewer:***@127.0.0.1:")
    assert cameras["north"]["name"] == "north"
    assert cameras["north"]["detect_fps"] == 1
    wait_processing(http, app, {"north": 0, "south": 0})
    assert {c["state"] for c in http.get("/api/cameras").json()} == {"online"}


def test_every_process_says_what_it_is(app: AppServer) -> None:
    # What `ps` shows (/proc/<pid>/cmdline): the server, its inference process and a decoder per camera.
    assert app.pid is not None
    titles = {pid: " ".join(psutil.Process(pid).cmdline()).strip() for pid in [app.pid, *app.child_pids()]}
    assert titles[app.pid] == "streamsrv: api"
    named = sorted(t for t in titles.values() if t.startswith("streamsrv: ") and t != "streamsrv: api")
    assert named == ["streamsrv: decoder north", "streamsrv: decoder south", "streamsrv: inference"], titles


def test_add_and_remove_a_camera_while_others_run(http: httpx.Client, app: AppServer, rtsp: RtspServer) -> None:
    before = {c: processed(http, c) for c in ("north", "south")}
    children = app.child_pids()
    url = f"rtsp://admin:{ADDED_PASSWORD}@127.0.0.1:{rtsp.port}/cam360"

    added = http.post("/api/cameras", json={"id": "east", "url": url, "detect_fps": 1})

    assert added.status_code == 201, added.text
    assert added.json()["url"] == f"rtsp://admin:***@127.0.0.1:{rtsp.port}/cam360"
    decoders = app.child_pids() - children
    assert len(decoders) == 1, "adding a camera starts exactly one process, its decoder"
    wait_processing(http, app, {"east": 0, **before})

    during = {c: processed(http, c) for c in ("north", "south")}
    assert http.delete("/api/cameras/east").status_code == 204

    (decoder,) = decoders
    assert not alive(decoder), "the removed camera's decoder process is gone"
    assert decoder not in app.child_pids()
    assert http.get("/api/cameras/east").status_code == 404
    assert http.get("/api/cameras/east/stats").status_code == 404
    assert [c["id"] for c in http.get("/api/cameras").json()] == ["north", "south"]
    wait_processing(http, app, during)


def scrape(http: httpx.Client) -> list[Sample]:
    """``/metrics`` parsed with prometheus_client's own parser."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def test_metrics_describe_the_running_cameras(http: httpx.Client) -> None:
    samples = scrape(http)

    def value(name: str, **labels: str) -> float:
        (sample,) = [s for s in samples if s.name == name and s.labels == labels]
        return sample.value

    for camera in ("north", "south"):
        assert value("streamsrv_camera_frames_processed_total", camera=camera) > 0
        assert value("streamsrv_camera_frames_decoded_total", camera=camera) > 0
        assert value("streamsrv_camera_frames_dropped_total", camera=camera, reason="skipped") > 0
        assert value("streamsrv_camera_state", camera=camera, state="online") == 1
        assert value("streamsrv_camera_state", camera=camera, state="error") == 0
        assert value("streamsrv_camera_ingest_fps", camera=camera) >= 0
        assert value("streamsrv_frame_age_seconds_count", camera=camera) > 0
    assert value("streamsrv_inference_model_loaded") == 1
    assert value("streamsrv_inference_duration_seconds_count") > 0
    assert value("streamsrv_inference_batch_size_count") == value("streamsrv_inference_duration_seconds_count")
    assert value("streamsrv_events_total", camera="north", type="camera.online") >= 1
    assert {s.labels["camera"] for s in samples if "camera" in s.labels} == {"north", "south"}, "east is gone"
    assert not any("://" in v for s in samples for v in s.labels.values()), "no URL in any label"


def test_patch_changes_only_what_it_names(http: httpx.Client, app: AppServer, config_file: Path) -> None:
    south = http.get("/api/cameras/south").json()

    # The redacted URL a client was shown, sent back unchanged, means "keep the real one".
    patched = http.patch("/api/cameras/south", json={"detect_fps": 2, "url": south["url"]})

    assert patched.status_code == 200, patched.text
    assert patched.json()["detect_fps"] == 2
    assert patched.json()["name"] == "South gate"
    entry = by_id(yaml.safe_load(config_file.read_text())["cameras"])["south"]
    assert entry["url"].startswith("rtsp://viewer:${STREAMSRV_TEST_CAM_PW}@"), "kept as the file wrote it"
    assert entry["detect_fps"] == 2
    assert PASSWORD not in config_file.read_text()

    renamed = http.patch("/api/cameras/north", json={"name": "North stairs"})
    assert renamed.json()["name"] == "North stairs"
    wait_processing(http, app, {"south": processed(http, "south")})


def test_put_replaces_a_camera(http: httpx.Client, clip_360p: Path) -> None:
    north = http.get("/api/cameras/north").json()
    body = {k: v for k, v in north.items() if k not in ("state", "error")}
    body["rules"] = {"lines": [{"name": "mid", "points": [[0, 180], [640, 180]]}]}

    replaced = http.put("/api/cameras/north", json=body)

    assert replaced.status_code == 200, replaced.text
    assert http.get("/api/cameras/north/lines").json()[0]["name"] == "mid"
    body["id"] = "elsewhere"
    mismatch = http.put("/api/cameras/north", json=body)
    assert mismatch.status_code == 422
    assert mismatch.json()["detail"][0]["loc"] == ["body", "id"]
    assert http.put("/api/cameras/nobody", json={**body, "id": "nobody"}).status_code == 404


@pytest.mark.parametrize(("body", "field", "says"), BAD_CAMERAS)
def test_bad_camera_is_refused_naming_the_field(
    http: httpx.Client, body: dict[str, Any], field: str, says: str
) -> None:
    assert_refused_naming(http.post("/api/cameras", json=body), field, says)
    assert http.get("/api/cameras/x").status_code == 404


def test_duplicate_id_is_a_conflict(http: httpx.Client) -> None:
    response = http.post("/api/cameras", json={"id": "north", "url": "rtsp://cam/1"})

    assert response.status_code == 409
    assert response.json()["detail"] == "id: camera 'north' already exists"


def test_bad_patch_is_refused_and_changes_nothing(http: httpx.Client) -> None:
    before = http.get("/api/cameras/south").json()

    for body, field in [({"detect_fps": 0}, "detect_fps"), ({"url": None}, "url"), ({"id": "other"}, "id")]:
        response = http.patch("/api/cameras/south", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"][:2] == ["body", field]

    assert http.get("/api/cameras/south").json()["detect_fps"] == before["detect_fps"]


def test_oversized_bodies_are_refused(http: httpx.Client) -> None:
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


def test_restart_restores_the_registry(
    http: httpx.Client, app: AppServer, config_file: Path, clip_360p: Path, env: dict[str, str]
) -> None:
    added = http.post(
        "/api/cameras",
        json={
            "id": "west",
            "url": str(clip_360p),
            "loop": True,
            "detect_fps": 1,
            "rules": {"zones": [{"name": "left", "polygon": [[0, 0], [320, 0], [320, 360], [0, 360]]}]},
        },
    )
    assert added.status_code == 201, added.text
    assert http.patch("/api/cameras/north", json={"enabled": False}).json()["state"] == "disabled"
    registry = http.get("/api/cameras").json()
    rules = {c["id"]: http.get(f"/api/cameras/{c['id']}/rules").json() for c in registry}

    workers = app.child_pids()
    app.stop(timeout=30)
    assert workers
    # orphans get SIGTERM from the kernel when the server dies (PR_SET_PDEATHSIG) and exit on their own time
    wait_for(lambda: not any(alive(pid) for pid in workers), 15, "the server's workers to exit")
    app.start()
    app.wait_ready()

    with app.client() as fresh:
        restored = fresh.get("/api/cameras").json()
        assert [{k: v for k, v in c.items() if k not in ("state", "error")} for c in restored] == [
            {k: v for k, v in c.items() if k not in ("state", "error")} for c in registry
        ]
        assert {c["id"]: fresh.get(f"/api/cameras/{c['id']}/rules").json() for c in restored} == rules
        assert by_id(restored)["north"]["state"] == "disabled"
        assert "disabled" in fresh.get("/api/cameras/north/stats").json()["detail"]
        wait_processing(fresh, app, {"south": 0, "west": 0})

    text = config_file.read_text()
    assert "${STREAMSRV_TEST_CAM_PW}" in text and "${STREAMSRV_TEST_CLIP}" in text
    assert PASSWORD not in text
    backup = config_file.with_name("streamsrv.yaml.bak").read_text()
    assert backup.startswith("# A hand-written config")
    log = app.log()
    assert PASSWORD not in log and ADDED_PASSWORD not in log
    assert "camera east removed" in log
