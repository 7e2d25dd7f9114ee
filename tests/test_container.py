"""The real image: the Dockerfile's CPU variant is built and run, and the server in it does its job.

Built on a Debian 12 base from debootstrap (tests/support/docker_engine.py), as docs/deploy.md describes for hosts
that cannot reach Docker Hub, with the host's CA bundle as the build secret ``ca`` (HTTPS here goes through an
intercepting proxy). The container gets the shared model and clips read-only, a config with an API key and no
cameras; then a file camera with a tripwire is added over the REST API, an event must come, and ``docker stop``
(SIGTERM, SIGKILL after 10 s) must find the server exiting cleanly by itself, as the non-root user.

The image and the build's layer cache are kept: a rebuild with unchanged sources takes seconds.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from streamsrv.config.models import ServerConfig
from tests.conftest import REPO_ROOT
from tests.support.docker_engine import docker, docker_cli, ensure_base_image, ensure_daemon

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE = "streamsrv:cpu-test"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI = "https://pypi.org/simple"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
API_KEY = "container-test-key"
CONTAINER_PORT = 8080
BUILD_TIMEOUT_S = 40 * 60  # cold: debootstrap, ~3 GB of wheels, bytecode compilation, layer export
READY_TIMEOUT_S = 300.0
EVENT_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 10
HEALTHY_TIMEOUT_S = 60.0  # the first check runs 15 s after the start


def torch_index() -> str:
    """The CPU wheels where their index resolves; PyPI's (CUDA) torch otherwise, which runs on the CPU too."""
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
    except OSError:
        return PYPI
    return CPU_TORCH_INDEX


@pytest.fixture(scope="module")
def cli() -> str:
    found = docker_cli()
    if found is None:
        pytest.skip("no docker CLI (scripts/install.sh installs Debian's docker.io)")
    ensure_daemon(found)
    return found


@pytest.fixture(scope="module")
def image(cli: str) -> str:
    base = ensure_base_image(cli)
    args = ["build", "--progress=plain", "-t", IMAGE, "--build-arg", f"BASE_IMAGE={base}"]
    args += ["--build-arg", f"TORCH_INDEX={torch_index()}"]
    if HOST_CA_BUNDLE.is_file():
        args += ["--secret", f"id=ca,src={HOST_CA_BUNDLE}"]
    started = time.monotonic()
    docker(cli, *args, str(REPO_ROOT), timeout_s=BUILD_TIMEOUT_S)
    size = int(docker(cli, "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout)
    print(f"built {IMAGE} in {time.monotonic() - started:.0f} s: {size / 1e9:.2f} GB")
    return IMAGE


def server_config(model: Path) -> str:
    lines = [
        f'model: {{path: "/models/{model.name}", labels: {{Normal: person, Fall: person}}}}',
        "inference: {threads: 1, max_batch: 4}",
        f"server: {{api_key: {API_KEY}{allowed_media()}}}",
        "cameras: []",
    ]
    return "\n".join(lines) + "\n"


def allowed_media() -> str:
    # Servers that confine API file cameras to server.allowed_file_dirs (issue 17) must allow the mounted clips.
    return ", allowed_file_dirs: [/media]" if "allowed_file_dirs" in ServerConfig.model_fields else ""


@pytest.fixture(scope="module")
def container(
    cli: str, image: str, tmp_path_factory: pytest.TempPathFactory, person_model: Path, clip_360p: Path
) -> Iterator[str]:
    config_dir = tmp_path_factory.mktemp("container-config")
    (config_dir / "streamsrv.yaml").write_text(server_config(person_model))
    config_dir.chmod(0o777)  # the server (uid 10001) reads it and may write beside it
    name = f"streamsrv-test-{os.getpid()}"
    docker(
        cli,
        "run",
        "-d",
        "--name",
        name,
        "--shm-size",
        "256m",
        "-p",
        f"127.0.0.1::{CONTAINER_PORT}",
        "-v",
        f"{config_dir}:/config",
        "-v",
        f"{person_model.parent}:/models:ro",
        "-v",
        f"{clip_360p.parent}:/media:ro",
        image,
    )
    try:
        yield name
    finally:
        docker(cli, "rm", "-f", "-v", name, check=False)


def base_url(cli: str, name: str) -> str:
    # "127.0.0.1:49153" (one line per address family)
    mapping = docker(cli, "port", name, f"{CONTAINER_PORT}/tcp").stdout.split()[0]
    return f"http://{mapping}"


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, cli: str, name: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    logs = docker(cli, "logs", "--tail", "40", name, check=False)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s; container log:\n{logs.stdout}{logs.stderr}")


@pytest.mark.timeout(BUILD_TIMEOUT_S + 900)
def test_image_serves_a_camera_added_over_the_api_and_stops_cleanly(cli: str, container: str, clip_360p: Path) -> None:
    http = httpx.Client(base_url=base_url(cli, container), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    with http:
        wait_for(lambda: http.get("/readyz").status_code == 200, READY_TIMEOUT_S, "/readyz 200", cli, container)

        camera = {
            "id": "concourse",
            "url": f"/media/{clip_360p.name}",
            "loop": True,
            "detect_fps": 5,
            "rules": {
                "lines": [
                    {"name": "midline", "points": [[0, 0.55], [1, 0.55]], "units": "norm"},
                ]
            },
        }
        added = http.post("/api/cameras", json=camera)
        assert added.status_code == 201, added.text

        def crossed() -> bool:
            page = http.get("/api/events", params={"camera": "concourse", "type": "line.cross"})
            return page.status_code == 200 and len(page.json()["events"]) > 0

        wait_for(crossed, EVENT_TIMEOUT_S, "line.cross event", cli, container)

    # The image's HEALTHCHECK (python -> /healthz) works in it: Docker sees the container healthy.
    health = ["inspect", "-f", "{{.State.Health.Status}}", container]
    wait_for(lambda: docker(cli, *health).stdout.strip() == "healthy", HEALTHY_TIMEOUT_S, "healthy", cli, container)

    # Not root, both as the image declares it and as the running server sees itself.
    assert docker(cli, "inspect", "-f", "{{.Config.User}}", container).stdout.strip() == "10001:10001"
    assert docker(cli, "exec", container, "id", "-u").stdout.strip() == "10001"

    # tini, the API process, inference, the decoder (and multiprocessing's helper), as host PIDs.
    top = docker(cli, "top", container, "-o", "pid").stdout.split()[1:]
    pids = [int(pid) for pid in top]
    assert len(pids) >= 4, top

    started = time.monotonic()
    docker(cli, "stop", "-t", str(STOP_TIMEOUT_S), container, timeout_s=STOP_TIMEOUT_S + 30)
    took = time.monotonic() - started
    exit_code = int(docker(cli, "inspect", "-f", "{{.State.ExitCode}}", container).stdout)
    log = docker(cli, "logs", container)
    # 0: the server handled SIGTERM and shut down; 143 would be SIGTERM's default action; 137 is docker's SIGKILL.
    assert exit_code == 0, f"exit code {exit_code}:\n{log.stdout[-3000:]}{log.stderr[-3000:]}"
    assert took < STOP_TIMEOUT_S, f"docker stop took {took:.1f} s"
    assert not [pid for pid in pids if psutil.pid_exists(pid)], "processes of the container outlived it"
    assert "Traceback" not in log.stderr + log.stdout
