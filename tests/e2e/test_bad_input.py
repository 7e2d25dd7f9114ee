"""Bad input from users and cameras: each is a clear 4xx (or a config error naming the field), never a 5xx, and
the server keeps running.

- Config files: malformed YAML, wrong types, unknown fields, bad polygons, path-like ids: ``validate-config``
  and ``serve`` both exit 2 naming file, line and field, without a traceback, and ``serve`` starts nothing.
- The API: path-like and unicode camera ids (in bodies and raw request paths), huge (10 000 points) and
  degenerate polygons and lines, deeply nested JSON, oversized rule bodies, SDP offers that are not usable.
- Static files: traversal out of /static, plain and encoded, is a 404.
- Camera credentials: cameras with a password that fail in every way we can stage (login wanted, not found,
  silent, garbage, unknown host) never show it in the API, /metrics or the log.

The schema-driven fuzzing is tests/e2e/test_api_fuzz.py; missing/wrong API keys and refused connections are
tests/e2e/test_api_security.py; oversized camera bodies are tests/e2e/test_api_cameras.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.fake_cameras import HttpTsCamera, LoginCamera, Segment, SilentServer, mpegts
from tests.support.processes import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

API_KEY = "bad-input-key-71c3"
SECRET = "s3cr3t-pw-9a1e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


# --- config files -------------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("cameras: [a, b\n", "not valid YAML"),
    ("cameras:\n  - id: a\n\turl: x.mp4\n", "not valid YAML"),
    ("inference: {max_batch: many}\n", "inference.max_batch = 'many'"),
    ("cameras: [{id: a, url: x.mp4, detect_fps: [5]}]\n", "cameras[0].detect_fps = [5]"),
    ("server: {port: 99999}\n", "server.port = 99999"),
    ("cameras: [{id: a, url: x.mp4, colour: red}]\n", "cameras[0].colour = 'red': unknown field"),
    ("cameras: [{id: ../etc, url: x.mp4}]\n", "cameras[0].id = '../etc'"),
    ("cameras: [{id: 'café', url: x.mp4}]\n", "cameras[0].id = 'café'"),
    (
        "cameras: [{id: a, url: x.mp4, rules: {zones: [{name: z, polygon: [[0, 0], [9, 9], [0, 9], [9, 0]]}]}}]\n",
        "polygon is not valid",
    ),
    ("cameras: [{id: a, url: x.mp4, rules: ../../etc/passwd}]\n", "cameras[0].rules"),
    ("inference: {stale_after_s: .inf}\n", "inference.stale_after_s = inf: Input should be a finite number"),
    ("cameras: [{id: a, url: x.mp4, reconnect: {max_s: .nan}}]\n", "cameras[0].reconnect.max_s = nan"),
]


@pytest.mark.parametrize("command", ["validate-config", "serve"])
@pytest.mark.parametrize(("text", "says"), BAD_CONFIGS)
def test_a_bad_config_is_an_error_naming_the_field(tmp_path: Path, command: str, text: str, says: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    argv = [sys.executable, "-m", "streamsrv.cli", command, str(config)]
    if command == "serve":
        argv[-1:] = ["--config", str(config), "--port", str(free_port())]

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # only when communicate timed out
            proc.kill()
            proc.wait()

    assert proc.returncode == 2, stderr[-2000:]
    assert stderr.startswith(f"streamsrv: error: {config}"), stderr
    assert says in stderr
    assert "Traceback" not in stderr
    assert not list(Path("/dev/shm").glob(f"streamsrv-{proc.pid}-*")), "serve started nothing"


# --- the live server ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cameras(clip_360p: Path) -> Iterator[dict[str, str]]:
    """Failing cameras, each URL with a password: a login-wanting HTTP camera, a 404, a silent one, garbage."""
    login = LoginCamera()
    silent = SilentServer()
    head = mpegts(clip_360p, seconds=2)
    garbage = HttpTsCamera(lambda n: [Segment(head, 2.0), Segment(None, 2.0)])
    yield {
        "login": f"http://admin:{SECRET}@{login.host}/video.mjpg",
        "missing": f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/none",
        "silent": f"rtsp://admin:{SECRET}@127.0.0.1:{silent.port}/cam",
        "garbage": garbage.url.replace("http://", f"http://admin:{SECRET}@"),
        "unknown": f"rtsp://admin:{SECRET}@camera.invalid/stream",
    }
    garbage.close()
    silent.close()
    login.close()


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path, clip_360p: Path, cameras: dict[str, str]) -> AppServer:
    fast = "open_timeout_s: 2, read_timeout_s: 2, reconnect: {initial_s: 0.5, max_s: 2}"
    failing = "".join(f'  - {{id: {cid}, url: "{url}", detect_fps: 1, {fast}}}\n' for cid, url in cameras.items())
    return module_app_factory(
        model_section(person_model)
        + f"""server: {{api_key: "{API_KEY}", log_json: true}}
cameras:
  - {{id: gate, url: "{clip_360p}", detect_fps: 1, loop: true}}
  - {{id: hall, url: "rtsp://127.0.0.1:1/hall", enabled: false}}
{failing}""",
        ready=False,
    )


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client(api_key=API_KEY) as client:
        yield client
    # Whatever a test sent, the server is still up and serving.
    assert app.running, app.output()
    with app.client(api_key=API_KEY) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/api/cameras/gate").status_code == 200


def raw_request(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send a request line exactly as given (httpx would normalise ``..`` and re-encode the path)."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "camera_id",
    ["../etc", "..", "%2e%2e", "a/b", "a\\b", "café", "名前", "a b", "", ".hidden", "-x", "a" * 65, "a\x00b"],
)
def test_path_like_and_unicode_camera_ids_are_refused(http: httpx.Client, camera_id: str) -> None:
    response = http.post("/api/cameras", json={"id": camera_id, "url": "rtsp://127.0.0.1:1/x", "enabled": False})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "id"]
    assert [c["id"] for c in http.get("/api/cameras").json()][:2] == ["gate", "hall"]


@pytest.mark.parametrize("url", ["cam\x00.mp4", "rtsp://h/s\x00x", "rtsp://h/s\r\nx", "clip\x1b.mp4"])
@pytest.mark.parametrize("path", ["/api/cameras", "/api/probe"])
def test_urls_with_control_characters_are_refused(http: httpx.Client, path: str, url: str) -> None:
    # Found by the schema fuzzer: a file "URL" with a NUL made resolving it raise, a 500.
    response = http.post(
        path, json={"id": "ctl", "url": url, "enabled": False} if path == "/api/cameras" else {"url": url}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "url"]
    assert "control characters" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/cameras/..%2F..%2Fetc%2Fpasswd",
        "/api/cameras/%2e%2e",
        "/api/cameras/%2e%2e/stats",
        "/api/cameras/a%2Fb",
        "/api/cameras/caf%C3%A9",
        "/api/cameras/%E5%90%8D%E5%89%8D/zones",
        "/api/cameras/%00",
        "/api/cameras/%ff%fe",
        "/api/cameras/gate%2F..%2Fhall/rules",
        "/api/cameras/../cameras/gate/zones/..%2F..%2Fx",
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_path_like_ids_in_request_paths_are_not_found(
    app: AppServer, http: httpx.Client, method: str, path: str
) -> None:
    status, body = raw_request(app.port, method, path)

    assert status in (400, 404, 405, 422), (status, body[:300])
    assert [c["id"] for c in http.get("/api/cameras").json()][:2] == ["gate", "hall"], "nothing was deleted"


def circle(n: int, radius: float = 150.0) -> list[list[float]]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [[320 + radius * float(np.cos(a)), 180 + radius * float(np.sin(a))] for a in angles]


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        ("zones", {"name": "huge", "polygon": circle(10_000)}, "polygon: List should have at most"),
        ("lines", {"name": "huge", "points": circle(10_000)}, "points: List should have at most"),
        ("zones", {"name": "flat", "polygon": [[0, 0], [5, 5], [10, 10]]}, "polygon is not valid"),
        ("zones", {"name": "dot", "polygon": [[7, 7], [7, 7], [7, 7], [7, 7]]}, "polygon"),
        ("zones", {"name": "spike", "polygon": [[0, 0], [10, 0], [10, 10], [10, 0]]}, "polygon"),
        ("zones", {"name": "nan", "polygon": [[0, 0], [10, 0], ["NaN", 10]]}, "finite"),
        ("zones", {"name": "str", "polygon": [[0, 0], ["a", 0], [0, 10]]}, "polygon"),
        ("zones", {"name": "3d", "polygon": [[0, 0, 0], [10, 0, 0], [0, 10, 0]]}, "polygon"),
        ("zones", {"name": "far", "polygon": [[0, 0], [6e307, 0], [0, 6e307]]}, "at most 100000"),
        ("lines", {"name": "far", "points": [[0, 0], [1e9, 1e9]]}, "at most 100000"),
        ("zones", {"name": "../z", "polygon": [[0, 0], [10, 0], [0, 10]]}, "name"),
        ("lines", {"name": "back", "points": [[0, 0], [10, 0], [5, 0]]}, "crosses itself"),
        ("lines", {"name": "one", "points": [[0, 0]]}, "points"),
    ],
    ids=[
        "10k-zone",
        "10k-line",
        "collinear",
        "one-point",
        "spike",
        "nan",
        "string",
        "3d",
        "far-zone",
        "far-line",
        "path-name",
        "line-folds-back",
        "line-one-point",
    ],
)
def test_huge_and_degenerate_geometry_is_refused(
    http: httpx.Client, kind: str, body: dict[str, Any], says: str
) -> None:
    response = http.post(f"/api/cameras/hall/{kind}", json=body)

    assert response.status_code == 422, response.text[:500]
    error = response.json()["detail"][0]
    assert says in ".".join(str(p) for p in error["loc"][1:]) + ": " + error["msg"], error
    assert http.get(f"/api/cameras/hall/{kind}").json() == []


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/api/cameras/hall/zones", b'{"name": "z", "polygon": [[0, 0], [10, 0], [NaN, 10]]}', "finite"),
        ("/api/cameras/hall/zones", b'{"name": "z", "polygon": [[0, 0], [Infinity, 0], [0, 10]]}', "finite"),
        (
            "/api/cameras/hall/zones",
            b'{"name": "z", "polygon": [[0, 0], [9, 0], [0, 9]], "loiter_s": 1e999}',
            "finite",
        ),
        ("/api/cameras", b'{"id": "x", "url": "rtsp://h/x", "enabled": false, "detect_fps": NaN}', "finite"),
        (
            "/api/cameras",
            b'{"id": "x", "url": "rtsp://h/x", "enabled": false, "reconnect": {"initial_s": 1e999}}',
            "finite",
        ),
        ("/api/cameras/hall/zones", b'{"name": "z", "polygon": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "parsing"),
        ("/api/cameras/hall/zones", b'{"name": "z", "polygon": [[0, 0],', "JSON decode error"),
        ("/api/cameras/hall/zones", b"\xff\xfe{}", "JSON decode error"),
    ],
    ids=["nan", "infinity", "1e999", "camera-nan", "camera-1e999", "nested-100k", "cut-short", "not-utf8"],
)
def test_non_finite_numbers_and_broken_json_are_refused(
    app: AppServer, http: httpx.Client, path: str, body: bytes, says: str
) -> None:
    status, answer = raw_request(app.port, "POST", path, body)

    assert status in (400, 422), (status, answer[:300])
    assert says in answer.decode(), answer[:300]
    assert http.get("/api/cameras/hall/zones").json() == []
    assert "x" not in [c["id"] for c in http.get("/api/cameras").json()]


def test_oversized_rule_bodies_are_refused(http: httpx.Client) -> None:
    big = {"zones": [{"name": f"z{i}", "polygon": circle(900)} for i in range(60)]}

    response = http.put("/api/cameras/hall/rules", json=big)

    assert response.status_code == 413, response.text[:300]
    assert http.get("/api/cameras/hall/zones").json() == []


SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
SDP_VIDEO = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=mid:0\r\na=rtcp-mux\r\n"
)


@pytest.mark.parametrize(
    "sdp",
    [
        "m=video",
        SDP_HEAD + "m=video abc UDP/TLS/RTP/SAVPF 96\r\n",
        SDP_HEAD + SDP_VIDEO + "a=rtpmap:96 NOPE/90000\r\na=recvonly\r\n",
        SDP_HEAD + (SDP_VIDEO + "a=rtpmap:96 VP8/90000\r\na=recvonly\r\n") * 2,
        SDP_HEAD + SDP_VIDEO.replace("actpass", "sideways") + "a=rtpmap:96 VP8/90000\r\na=recvonly\r\n",
        SDP_HEAD + "m=video 9 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        SDP_HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" + "a=x\r\n" * 10_000,
    ],
    ids=["bare", "bad-port", "unknown-codec", "duplicate-mid", "bad-setup", "no-ice", "many-attributes"],
)
def test_unusable_sdp_offers_are_400_and_leave_no_peer(http: httpx.Client, sdp: str) -> None:
    response = http.post("/api/cameras/gate/webrtc", json={"type": "offer", "sdp": sdp})

    assert response.status_code == 400, response.text[:500]
    assert response.json()["detail"].startswith("sdp: ")
    assert http.get("/api/preview/stats").json()["webrtc_peers"] == 0


@pytest.mark.parametrize(
    "target",
    [
        "/static/../README.md",
        "/static/../../pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/%252e%252e/%252e%252e/pyproject.toml",
        "/static/..\\..\\pyproject.toml",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/....//....//etc/passwd",
        "/static/index.html%00.js",
        "/../../etc/passwd",
    ],
)
def test_static_files_cannot_escape_their_folder(app: AppServer, target: str) -> None:
    status, body = raw_request(app.port, "GET", target)

    assert status in (400, 404), (status, body[:200])
    assert b"root:" not in body and b"[project]" not in body and b"# streamsrv" not in body


def test_static_files_are_served(app: AppServer) -> None:
    status, body = raw_request(app.port, "GET", "/static/app.js")
    assert status == 200 and body


def test_camera_credentials_appear_nowhere(app: AppServer, http: httpx.Client, cameras: dict[str, str]) -> None:
    def errors() -> dict[str, str | None]:
        return {cid: http.get(f"/api/cameras/{cid}/stats").json()["error"] for cid in cameras}

    wait_for(lambda: all(errors().values()), 90, "every failing camera to report its error", app)
    wait_for(lambda: http.get("/api/cameras/garbage/stats").json()["reconnects"] >= 2, 90, "garbage to retry", app)
    reported = errors()
    assert "unauthorized" in (reported["login"] or ""), reported
    assert "no answer" in (reported["silent"] or ""), reported
    responses = [
        http.get("/api/cameras"),
        *(http.get(f"/api/cameras/{cid}") for cid in cameras),
        *(http.get(f"/api/cameras/{cid}/stats") for cid in cameras),
        http.get("/metrics"),
        http.get("/readyz"),
        http.get("/api/preview/stats"),
        http.patch("/api/cameras/login", json={"detect_fps": 0}),
        http.post("/api/cameras", json={"id": "login", "url": cameras["login"]}),
        http.post("/api/probe", json={"url": cameras["unknown"], "timeout_s": 2}),
        http.post("/api/probe", json={"url": cameras["silent"], "timeout_s": 2}),
    ]
    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text[:300])
        assert SECRET not in response.text, (response.request.url, response.text)
    for cid in cameras:
        assert "admin:***@" in json.dumps(http.get(f"/api/cameras/{cid}").json())
    log = app.log()
    assert SECRET not in log
    assert API_KEY not in log
