"""A Docker engine for the container test: Debian's docker.io, started here if it is not running, and a Debian 12
base image built with debootstrap (Docker Hub may be out of reach; Debian's mirror and PyPI are not).

The daemon is left running and the images are kept: the next run reuses the base image and the build's layer cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Debian's docker.io CLI drives BuildKit itself; a newer CLI elsewhere on PATH may need the buildx plugin for it.
DEBIAN_DOCKER = Path("/usr/bin/docker")
DOCKERD = "dockerd"
DAEMON_LOG = Path(tempfile.gettempdir()) / "streamsrv-test-dockerd.log"
DAEMON_START_TIMEOUT_S = 60.0
BASE_IMAGE = "streamsrv-base:bookworm"
DEBIAN_MIRROR = os.environ.get("STREAMSRV_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def docker_cli() -> str | None:
    """The docker CLI to use: $STREAMSRV_DOCKER, else Debian's, else whatever is on PATH (None: none at all)."""
    chosen = os.environ.get("STREAMSRV_DOCKER")
    if chosen:
        return chosen
    if DEBIAN_DOCKER.exists():
        return str(DEBIAN_DOCKER)
    return shutil.which("docker")


def docker(cli: str, *args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` with BuildKit on; its output captured. Raises with the output when ``check`` and it fails."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    result = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=timeout_s)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def daemon_answers(cli: str) -> bool:
    return docker(cli, "info", timeout_s=30, check=False).returncode == 0


def ensure_daemon(cli: str) -> None:
    """Starts ``dockerd`` (as root, in the background, logging to DAEMON_LOG) unless a daemon already answers."""
    if daemon_answers(cli):
        return
    dockerd = shutil.which(DOCKERD) or shutil.which(DOCKERD, path="/usr/sbin:/sbin")
    if dockerd is None or os.geteuid() != 0:
        raise AssertionError("no Docker daemon answers, and dockerd cannot be started here (needs root and docker.io)")
    with DAEMON_LOG.open("ab") as log:
        # A session of its own: the daemon outlives the test run, so later runs reuse its layer cache.
        subprocess.Popen([dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if daemon_answers(cli):
            return
        time.sleep(1)
    raise AssertionError(f"dockerd did not answer within {DAEMON_START_TIMEOUT_S:.0f} s; see {DAEMON_LOG}")


def ensure_base_image(cli: str, name: str = BASE_IMAGE) -> str:
    """``name``: a minimal Debian 12 from debootstrap, imported once and reused while it exists."""
    if docker(cli, "image", "inspect", name, check=False).returncode == 0:
        return name
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise AssertionError(f"{name} is missing and debootstrap is not installed (scripts/install.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="streamsrv-debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [debootstrap, "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run([cli, "import", "-", name], stdin=tar.stdout, capture_output=True, timeout=600)
        tar.stdout.close()
        assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    return name
