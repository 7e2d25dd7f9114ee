"""What any node shows of the cluster, read from a real redis-server: the ``GET /api/cluster`` shape of the issue,
unassigned cameras with their reason, and the ``streamsrv_cluster_*`` metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.api.routers.cameras import cluster_camera_out
from streamsrv.cluster.leases import Lease, Leases, LeaseValue
from streamsrv.cluster.membership import Membership, NodeIdClash, NodeInfo
from streamsrv.cluster.metrics import ClusterCollector
from streamsrv.cluster.registry import RegistryStore
from streamsrv.cluster.view import ClusterView, read_view
from streamsrv.config.models import CameraConfig
from tests.support.dashboards import CLUSTER_METRIC_PREFIX, TARGET_LABELS, queried
from tests.support.processes import RedisServer


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


def node(client: redis.Redis, node_id: str) -> Any:
    return SimpleNamespace(
        node_id=node_id,
        store=RegistryStore(client),
        membership=Membership(client, node_id, lease_s=30),
        leases=Leases(client, node_id, lease_s=30),
        ready=True,
        counts={"acquired": 1, "lost": 0, "released": 0, "redis_errors": 0},
    )


def test_cluster_view_has_the_contract_shape_and_says_why_a_camera_runs_nowhere(client: redis.Redis) -> None:
    a = node(client, "a")
    a.store.seed(
        [
            CameraConfig(id="door", url="rtsp://cam/1"),
            CameraConfig(id="gate", url="rtsp://cam/2"),
            CameraConfig(id="off", url="rtsp://cam/3", enabled=False),
        ]
    )
    assert a.membership.beat(NodeInfo("a", "http://10.0.0.1:8080", capacity=1, processed_fps=4.5))
    lease = a.leases.acquire("door", floor=0)
    assert isinstance(lease, Lease)

    body = read_view(a).to_api()

    assert set(body) == {"nodes", "cameras", "unassigned"}
    (only,) = body["nodes"]
    assert set(only) == {"id", "url", "alive", "last_seen_s", "cameras", "capacity", "processed_fps", "inference_busy"}
    assert only["id"] == "a" and only["alive"] and only["cameras"] == ["door"] and only["capacity"] == 1
    assert only["url"] == "http://10.0.0.1:8080" and only["processed_fps"] == 4.5 and 0 <= only["last_seen_s"] < 5
    assert body["cameras"] == {"door": {"node": "a", "fencing_token": 1, "since": lease.value.since}}
    assert body["unassigned"]["off"] == "disabled"
    assert body["unassigned"]["gate"].startswith("no room: all 1 live node(s) are at capacity")

    registry = CollectorRegistry()
    registry.register(ClusterCollector(a))
    text = generate_latest(registry).decode()
    assert 'streamsrv_cluster_camera_unassigned{camera="off",reason="disabled"} 1.0' in text
    assert 'streamsrv_cluster_node_cameras{node_id="a"} 1.0' in text
    assert 'streamsrv_cluster_leases_total{node_id="a",outcome="acquired"} 1.0' in text
    # what the Grafana dashboards ask of the cluster metrics is here, with the labels they filter on
    scraped: dict[str, list[set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scraped.setdefault(sample.name, []).append(set(sample.labels))
    for query, selector in queried():
        if selector.metric.startswith(CLUSTER_METRIC_PREFIX):
            needed = selector.labels - TARGET_LABELS
            assert any(needed <= labels for labels in scraped.get(selector.metric, [])), (query.panel, selector)


def test_a_dead_node_is_listed_not_alive_and_a_live_one_cannot_be_cloned(client: redis.Redis) -> None:
    a = node(client, "a")
    assert a.membership.beat(NodeInfo("a", "http://a:8080"))
    clone = Membership(client, "a", lease_s=1)
    with pytest.raises(NodeIdClash, match="node_id 'a' is already used by a live node at http://a:8080"):
        # the first keeps beating while the clone watches
        stop = threading.Event()

        def keep_beating() -> None:
            while not stop.wait(0.2):
                a.membership.beat(NodeInfo("a", "http://a:8080"))

        beater = threading.Thread(target=keep_beating)
        beater.start()
        try:
            clone.check_clash()
        finally:
            stop.set()
            beater.join()
    assert not clone.beat(NodeInfo("a", "http://clone:8080"))  # the heartbeat script refuses it too
    a.membership.leave()
    view = read_view(a)
    assert not view.nodes["a"].alive
    clone.check_clash()  # the id is free once its holder left


def test_cameras_list_each_camera_with_its_node_or_why_it_runs_nowhere() -> None:
    cams = {
        "door": CameraConfig(id="door", url="rtsp://u:secret@cam/1"),
        "gate": CameraConfig(id="gate", url="rtsp://cam/2"),
        "yard": CameraConfig(id="yard", url="rtsp://cam/3"),
    }
    other = NodeInfo("b", "http://b:8080", states={"gate": "reconnecting"}, alive=True)
    view = ClusterView(
        me="a",
        cameras=cams,
        nodes={"b": other},
        holders={"door": None, "gate": LeaseValue(4, "b", 1.0), "yard": None},
        unassigned={"door": "no room: all 1 live node(s) are at capacity (1 camera(s) in all)"},
        at=2.0,
    )
    door, gate, yard = (cluster_camera_out(view, cams[c], None) for c in ("door", "gate", "yard"))
    assert (door.state, door.node) == ("unassigned", None) and (door.error or "").startswith("no room")
    assert "secret" not in door.url
    assert (gate.state, gate.node) == ("reconnecting", "b")  # as its node reports it
    assert gate.model_dump(mode="json")["node"] == "b"
    assert (yard.state, yard.node) == ("starting", None)  # between owners
