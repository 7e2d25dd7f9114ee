"""The Kubernetes manifests (deploy/k8s) hold together: nothing is applied to a cluster here. Instead:

- the base and the gpu overlay are rendered (tests/support/kustomize.py; also with ``kubectl kustomize`` where a
  kubectl with kustomize v5 is installed, which must render the same) and every object is validated offline against
  the Kubernetes schemas that kubernetes-validate (PyPI) ships, strictly: an unknown or misspelt field fails;
- the wiring is checked by reading every object that refers to another: selectors against pod labels, probe ports
  and paths against the container and the app's open routes, the config's Redis URL against the Redis Service, the
  config's ``${NAME}`` references against the container's environment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from streamsrv.config.loader import parse_config
from tests.support.fake_server import app_config, serve_in_process
from tests.support.kustomize import Object, kubectl_kustomize, kubectl_render, normalised, render

REPO_ROOT = Path(__file__).resolve().parent.parent
K8S = REPO_ROOT / "deploy" / "k8s"
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
KUSTOMIZATIONS = {"base": BASE, "gpu": GPU}
GPU_RESOURCE = "nvidia.com/gpu"
# Kubernetes releases the manifests must be valid for: the newest schemas kubernetes-validate ships, and the oldest
# release still commonly run (policy/v1 PDBs and seccompProfile are older than it).
OLDEST_VERSION = "1.29"


@pytest.fixture(scope="module", params=list(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> list[Object]:
    return render(KUSTOMIZATIONS[request.param])


def one(objects: list[Object], kind: str, name: str) -> Object:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod(objects: list[Object], name: str) -> dict[str, Any]:
    """The pod template's spec of a Deployment."""
    spec: dict[str, Any] = one(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def server(objects: list[Object]) -> dict[str, Any]:
    [container] = pod(objects, "streamsrv")["containers"]
    assert container["name"] == "streamsrv"
    return dict(container)


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def arg(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    return str(args[args.index(flag) + 1])


def container_port(container: dict[str, Any], port: str | int) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    [found] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(found)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def config_text(objects: list[Object]) -> str:
    """The streamsrv config the pods read: the ConfigMap key behind the --config path."""
    container = server(objects)
    config_path = PurePosixPath(arg(container, "--config"))
    [mount] = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == config_path.parent]
    [volume] = [v for v in pod(objects, "streamsrv")["volumes"] if v["name"] == mount["name"]]
    configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
    return str(configmap["data"][config_path.name])


# --- rendering and schemas -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_VERSION, kubernetes_validate.latest_version()])
def test_every_object_is_valid_for_kubernetes(rendered: list[Object], version: str) -> None:
    assert rendered
    for o in rendered:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            raise AssertionError(f"{o['kind']}/{o['metadata']['name']}: {path}: {exc.message}") from None


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_kubectl_kustomize_renders_the_same(name: str) -> None:
    kubectl = kubectl_kustomize()
    if kubectl is None:
        pytest.skip("no kubectl with kustomize v5: the other tests check tests/support/kustomize.py's rendering")
    assert normalised(kubectl_render(kubectl, KUSTOMIZATIONS[name])) == normalised(render(KUSTOMIZATIONS[name]))


def test_base_is_the_whole_system_and_holds_no_secret() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in render(BASE))
    assert kinds == [
        ("ConfigMap", "streamsrv-config"),
        ("Deployment", "redis"),
        ("Deployment", "streamsrv"),
        ("NetworkPolicy", "redis"),
        ("PersistentVolumeClaim", "redis-data"),
        ("PodDisruptionBudget", "streamsrv"),
        ("Service", "redis"),
        ("Service", "streamsrv"),
    ]
    # The overlay adds nothing but its patch and image.
    assert sorted((o["kind"], o["metadata"]["name"]) for o in render(GPU)) == kinds


# --- the GPU overlay -----------------------------------------------------------------------------------------------


def test_gpu_is_asked_for_in_the_overlay_only() -> None:
    assert GPU_RESOURCE not in yaml.safe_dump_all(render(BASE))
    base, gpu = server(render(BASE)), server(render(GPU))
    assert gpu["resources"]["limits"][GPU_RESOURCE] == 1
    assert base["image"] == "streamsrv:cpu" and gpu["image"] == "streamsrv:cuda"  # images: in each kustomization
    assert int(env(gpu)["STREAMSRV_CAPACITY"]["value"]) > int(env(base)["STREAMSRV_CAPACITY"]["value"])
    # A rolling update must not wait for a spare GPU: the old pod goes first.
    strategy = one(render(GPU), "Deployment", "streamsrv")["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}
    # The patch kept the base's probes, mounts and security settings.
    assert {k: v for k, v in gpu.items() if k not in {"env", "resources", "image"}} == {
        k: v for k, v in base.items() if k not in {"env", "resources", "image"}
    }


# --- the streamsrv pods --------------------------------------------------------------------------------------------


def test_shm_is_memory_backed_and_bounded(rendered: list[Object]) -> None:
    [mount] = [m for m in server(rendered)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    [volume] = [v for v in pod(rendered, "streamsrv")["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    shm = volume["emptyDir"]["sizeLimit"]
    assert shm.endswith("Gi") and int(shm[:-2]) >= 1  # as docker-compose.yml's shm_size
    # Memory-backed /dev/shm counts against the container's memory: the limit must hold it and more.
    limit = server(rendered)["resources"]["limits"]["memory"]
    assert int(limit.removesuffix("Gi")) >= 2 * int(shm[:-2])


def test_probes_call_the_apps_open_health_routes_on_the_served_port(rendered: list[Object]) -> None:
    container = server(rendered)
    served = int(arg(container, "--port"))
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: p["path"] for kind, p in probes.items()} == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    assert all(container_port(container, p["port"]) == served for p in probes.values())
    annotations = one(rendered, "Deployment", "streamsrv")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == served
    # The kubelet and Prometheus send no API key: the app must answer these without one while a key is set.
    paths = {p["path"] for p in probes.values()} | {annotations["prometheus.io/path"]}
    with serve_in_process(app_config(server={"api_key": "k8s-test-key"})) as (http, _):
        assert http.get("/api/cameras").status_code == 401
        for path in sorted(paths):
            assert http.get(path).status_code == 200, path


def test_pods_run_as_non_root_with_nothing_to_escalate(rendered: list[Object]) -> None:
    for name in ("streamsrv", "redis"):
        spec = pod(rendered, name)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, f"{name}/{container['name']}"
    # The image's numeric user, so that runAsNonRoot can be verified without its /etc/passwd.
    dockerfile = DockerfileParser(str(REPO_ROOT / "Dockerfile"))
    [user] = [i["value"] for i in dockerfile.structure if i["instruction"] == "USER"]
    assert pod(rendered, "streamsrv")["securityContext"]["runAsUser"] == int(user.split(":")[0])


def test_what_the_server_writes_goes_to_volumes(rendered: list[Object]) -> None:
    # readOnlyRootFilesystem: the working directory, the model cache and ultralytics' settings (Dockerfile ENV and
    # WORKDIR), temporary files and the frame rings must each be on a writable volume.
    dockerfile = DockerfileParser(str(REPO_ROOT / "Dockerfile"))
    [workdir] = [i["value"] for i in dockerfile.structure if i["instruction"] == "WORKDIR"][-1:]
    written = [workdir, dockerfile.envs["STREAMSRV_CACHE"], dockerfile.envs["YOLO_CONFIG_DIR"], "/tmp", "/dev/shm"]
    container = server(rendered)
    volumes = {v["name"]: v for v in pod(rendered, "streamsrv")["volumes"]}
    writable = [
        PurePosixPath(m["mountPath"])
        for m in container["volumeMounts"]
        if not m.get("readOnly") and "emptyDir" in volumes[m["name"]]
    ]
    for path in map(PurePosixPath, written):
        assert any(path == w or w in path.parents for w in writable), f"{path} is not on a writable volume"
    assert all("sizeLimit" in v["emptyDir"] for v in volumes.values() if "emptyDir" in v)


def test_api_key_comes_from_a_secret_the_config_reads(rendered: list[Object]) -> None:
    key = env(server(rendered))["STREAMSRV_API_KEY"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "streamsrv-api-key", "key": "api-key"}}
    assert not [o for o in rendered if o["kind"] == "Secret"]  # created by the operator, never committed
    raw = yaml.safe_load(config_text(rendered))
    assert raw["server"]["api_key"] == "${STREAMSRV_API_KEY}"  # no default: without the key the server refuses
    assert arg(server(rendered), "--host") == "0.0.0.0"


def test_every_environment_reference_in_the_config_is_set_or_has_a_default(rendered: list[Object]) -> None:
    variables = env(server(rendered))
    for name, default in re.findall(r"\$\{([A-Za-z_]\w*)(:-[^}]*)?\}", config_text(rendered)):
        assert name in variables or default, f"${{{name}}} is neither in the container's env nor defaulted"


def test_node_identity_comes_from_the_downward_api(rendered: list[Object]) -> None:
    container = server(rendered)
    cluster = yaml.safe_load(config_text(rendered))["cluster"]
    variables = env(container)
    assert cluster["node_id"] == "${POD_NAME}"
    assert variables["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    advertised = urlsplit(cluster["advertise_url"])
    assert advertised.hostname == "${pod_ip}"  # urlsplit lowercases the host
    assert variables["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert advertised.port == int(arg(container, "--port"))


def test_config_points_at_the_redis_service(rendered: list[Object]) -> None:
    raw = yaml.safe_load(config_text(rendered))
    redis = one(rendered, "Service", "redis")
    [redis_port] = redis["spec"]["ports"]
    for url in (raw["cluster"]["redis_url"], raw["events"]["redis_url"]):
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("redis", "redis", redis_port["port"])
    [redis_container] = pod(rendered, "redis")["containers"]
    assert container_port(redis_container, redis_port["targetPort"]) == 6379
    assert raw["server"]["persist"] is False  # /config is a read-only ConfigMap
    assert raw["cluster"]["lease_s"] == 10


def test_selectors_match_the_pods_they_mean(rendered: list[Object]) -> None:
    deployments = [o for o in rendered if o["kind"] == "Deployment"]
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in deployments}
    for deployment in deployments:
        assert deployment["spec"]["selector"]["matchLabels"] == labels[deployment["metadata"]["name"]]
    # Each selector picks its own pods and not the others'.
    policy = one(rendered, "NetworkPolicy", "redis")["spec"]
    [ingress] = policy["ingress"]
    [source] = ingress["from"]
    chosen = {
        "Service/streamsrv": one(rendered, "Service", "streamsrv")["spec"]["selector"],
        "PodDisruptionBudget/streamsrv": one(rendered, "PodDisruptionBudget", "streamsrv")["spec"]["selector"][
            "matchLabels"
        ],
        "Service/redis": one(rendered, "Service", "redis")["spec"]["selector"],
        "NetworkPolicy/redis": policy["podSelector"]["matchLabels"],
        "NetworkPolicy/redis ingress": source["podSelector"]["matchLabels"],
    }
    expected = {
        "Service/streamsrv": "streamsrv",
        "PodDisruptionBudget/streamsrv": "streamsrv",
        "Service/redis": "redis",
        "NetworkPolicy/redis": "redis",
        "NetworkPolicy/redis ingress": "streamsrv",
    }
    for what, selector in chosen.items():
        assert [name for name, pod_labels in labels.items() if selects(selector, pod_labels)] == [expected[what]], what
    service = one(rendered, "Service", "streamsrv")
    [port] = service["spec"]["ports"]
    assert container_port(server(rendered), port["targetPort"]) == int(arg(server(rendered), "--port"))
    assert one(rendered, "PodDisruptionBudget", "streamsrv")["spec"]["maxUnavailable"] == 1


def test_sigterm_has_time_to_hand_the_cameras_over(rendered: list[Object]) -> None:
    spec = pod(rendered, "streamsrv")
    # tests/test_container.py stops the server with `docker stop -t 10`; give it three times that.
    assert spec["terminationGracePeriodSeconds"] >= 30
    # tini is the image's PID 1 and forwards SIGTERM: the container must not replace the entrypoint.
    assert "command" not in server(rendered)
    assert shlex.join(server(rendered)["args"]).startswith("serve --config /config/")


def test_redis_keeps_the_registry_on_a_volume(rendered: list[Object]) -> None:
    deployment = one(rendered, "Deployment", "redis")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    [data] = container["volumeMounts"]
    [volume] = deployment["spec"]["template"]["spec"]["volumes"]
    assert data == {"name": volume["name"], "mountPath": "/data"}
    assert one(rendered, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


# --- Prometheus ----------------------------------------------------------------------------------------------------


def test_prometheus_job_labels_every_series_with_its_node() -> None:
    config = yaml.safe_load((K8S / "prometheus" / "scrape-config.yaml").read_text())
    [job] = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    rules = job["relabel_configs"]
    keep = [r for r in rules if r.get("action") == "keep"]
    assert {(tuple(r["source_labels"]), r["regex"]) for r in keep} >= {
        (("__meta_kubernetes_pod_annotation_prometheus_io_scrape",), "true"),
    }
    # The node label is the pod name, which is the node_id the config gives each node.
    [node] = [r for r in rules if r.get("target_label") == "node"]
    assert node["source_labels"] == ["__meta_kubernetes_pod_name"]
    assert yaml.safe_load(config_text(render(BASE)))["cluster"]["node_id"] == "${POD_NAME}"
    targets = [r for r in rules if r.get("target_label") == "__address__"]
    assert targets and "__meta_kubernetes_pod_annotation_prometheus_io_port" in targets[0]["source_labels"]


# --- the config, through the real config model ---------------------------------------------------------------------


def test_configmap_config_loads_with_the_cluster_section(monkeypatch: pytest.MonkeyPatch) -> None:
    # Passes once cluster mode (the `cluster:` section of the config model) is merged.
    monkeypatch.setenv("POD_NAME", "streamsrv-7d4b9c6f5-x2x8k")
    monkeypatch.setenv("POD_IP", "10.244.1.17")
    monkeypatch.setenv("STREAMSRV_API_KEY", "k8s-test-key")
    for name, path in KUSTOMIZATIONS.items():
        objects = render(path)
        monkeypatch.setenv("STREAMSRV_CAPACITY", env(server(objects))["STREAMSRV_CAPACITY"]["value"])
        cfg: Any = parse_config(config_text(objects), f"deploy/k8s ({name}): streamsrv-config")
        assert cfg.cluster.redis_url == cfg.events.redis_url == "redis://redis:6379/0"
        assert cfg.cluster.node_id == "streamsrv-7d4b9c6f5-x2x8k"
        assert cfg.cluster.advertise_url == "http://10.244.1.17:8080"
        assert cfg.cluster.lease_s == 10
        assert cfg.cluster.capacity == int(env(server(objects))["STREAMSRV_CAPACITY"]["value"])
        assert cfg.server.api_key.get_secret_value() == "k8s-test-key"
