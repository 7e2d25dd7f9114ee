"""Cluster mode on real processes: several ``streamsrv serve`` nodes, a real redis-server, the real model.

Each guarantee of docs/cluster.md is checked on what actually runs: decoder processes per node (their titles,
``streamsrv: decoder <id>``), the leases and the event stream in Redis, and every node's API. Leases are short
(``lease_s`` 3) and cameras few and slow (1 fps) so the file stays within a few minutes on a 2-core machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from streamsrv.events.model import Event
from tests.support.app_server import AppServer, model_section
from tests.support.processes import RedisServer, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
LEASE_S = 3.0
MOVE_BOUND_S = LEASE_S + 5
# A camera is online once its new decoder delivered a frame: decoders run at nice 19 behind every node's model,
# so on a loaded 2-core machine the first frame can take longer than the lease hand-over itself.
ONLINE_SLACK_S = 25.0
ZONE = "{zones: [{name: all, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], units: norm}]}"


class Nodes:
    """Cluster nodes, each a ``streamsrv serve`` on its own port; stopped (SIGKILL if need be) at the end."""

    def __init__(self, workdir: Path, redis_url: str, model: Path, clip: Path) -> None:
        self.workdir, self.redis_url, self.model, self.clip = workdir, redis_url, model, clip
        self.nodes: dict[str, AppServer] = {}

    def config(self, node_id: str, cameras: int, **cluster: Any) -> Path:
        extra = "".join(f", {k}: {v}" for k, v in cluster.items())
        text = model_section(self.model) + (
            f"server: {{allowed_file_dirs: ['{self.clip.parent}']}}\n"
            f"cluster: {{redis_url: '{self.redis_url}', node_id: {node_id}, lease_s: {LEASE_S}{extra}}}\n"
        )
        if cameras:
            text += "cameras:\n" + "".join(
                f"  - {{id: cam{i}, url: '{self.clip}', loop: true, detect_fps: 1, rules: {ZONE}}}\n"
                for i in range(cameras)
            )
        path = self.workdir / f"{node_id}-{len(self.nodes)}.yaml"
        path.write_text(text)
        return path

    def start(self, node_id: str, cameras: int = 0, **cluster: Any) -> AppServer:
        server = AppServer(self.config(node_id, cameras, **cluster), port=free_port())
        self.nodes[node_id] = server
        server.start()
        return server

    def live(self) -> dict[str, AppServer]:
        return {n: s for n, s in self.nodes.items() if s.running}

    def close(self) -> None:
        for server in self.nodes.values():
            if server.running and server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)
            server.stop(timeout=30)


def decoders(server: AppServer) -> list[str]:
    """The camera ids of the node's decoder processes, by their process titles."""
    out = []
    for pid in server.child_pids():
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if title.startswith("streamsrv: decoder "):
            out.append(title.removeprefix("streamsrv: decoder ").strip())
    return out


def cluster(server: AppServer) -> dict[str, Any]:
    with server.client(timeout_s=10) as http:
        answer = http.get("/api/cluster")
    answer.raise_for_status()
    return answer.json()  # type: ignore[no-any-return]


def cameras(server: AppServer) -> dict[str, dict[str, Any]]:
    with server.client(timeout_s=10) as http:
        return {c["id"]: c for c in http.get("/api/cameras").json()}


def settled(nodes: Nodes, expected: set[str], online: bool = True) -> bool:
    """Every expected camera leased by a live node, run by exactly that node's one decoder (and online)."""
    live = nodes.live()
    some = next(iter(live.values()))
    view = cluster(some)
    owners = {c: v["node"] for c, v in view["cameras"].items()}
    if set(owners) != expected or not set(owners.values()) <= set(live):
        return False
    running = Counter((n, c) for n, s in live.items() for c in decoders(s))
    if running != Counter((n, c) for c, n in owners.items()):
        return False
    return not online or all(c["state"] == "online" for c in cameras(some).values() if c["id"] in expected)


def until_settled(nodes: Nodes, expected: set[str], timeout_s: float, what: str, online: bool = True) -> None:
    """``wait_for(settled)``, failing with what each node runs and what the cluster says."""
    try:
        wait_for(lambda: settled(nodes, expected, online), timeout_s, what)
    except AssertionError as exc:
        live = nodes.live()
        running = {n: sorted(decoders(s)) for n, s in live.items()}
        some = next(iter(live.values()))
        raise AssertionError(
            f"{exc}\ndecoders: {running}\ncluster: {cluster(some)}\ncameras: "
            f"{ {c: (v['node'], v['state']) for c, v in cameras(some).items()} }"
        ) from None


def stream(client: redis.Redis) -> list[tuple[float, Event]]:
    """Every event in the stream with the time Redis added it (the entry id's milliseconds)."""
    out = []
    for entry_id, fields in client.xrange("streamsrv:events"):
        ms = int(entry_id.decode().split("-")[0])
        out.append((ms / 1000, Event.from_json(fields[b"event"])))
    return out


def assert_no_repeats(events: list[tuple[float, Event]]) -> None:
    ids = Counter(e.id for _, e in events)
    seqs = Counter((e.camera_id, e.seq) for _, e in events)
    assert not [i for i, n in ids.items() if n > 1], "an event appears twice in the stream"
    assert not [k for k, n in seqs.items() if n > 1], f"a camera's seq repeats: {[k for k, n in seqs.items() if n > 1]}"
    for camera_id in {e.camera_id for _, e in events}:
        order = [e.seq for _, e in events if e.camera_id == camera_id]
        assert order == sorted(order), f"{camera_id}: seq goes back in the stream: {order}"


@pytest.fixture
def redis_srv() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nodes(tmp_path: Path, redis_srv: RedisServer, person_model: Path, clip_360p: Path) -> Iterator[Nodes]:
    made = Nodes(tmp_path, redis_srv.url, person_model, clip_360p)
    yield made
    made.close()


def test_failover_join_stall_and_leave(nodes: Nodes, redis_srv: RedisServer) -> None:
    """Guarantees 1-5: one decoder per camera; kill -9; SIGSTOP past the lease; seq never repeats; join; SIGTERM."""
    client = redis.Redis.from_url(redis_srv.url)
    six = {f"cam{i}" for i in range(6)}
    for node_id in ("n1", "n2", "n3"):
        nodes.start(node_id, cameras=6)
    until_settled(nodes, six, 180, "6 cameras settled on 3 nodes")  # 1: exactly one decoder each

    # 5a: a 4th node joins: it takes at most its fair share, nothing moves between the old nodes
    before = {c: v["node"] for c, v in cluster(nodes.nodes["n1"])["cameras"].items()}
    nodes.start("n4")
    wait_for(
        lambda: settled(nodes, six) and "n4" in {n["id"] for n in cluster(nodes.nodes["n1"])["nodes"]},
        120,
        "6 cameras settled on 4 nodes",
    )
    until_settled(nodes, six, 30, "settled again")
    after = {c: v["node"] for c, v in cluster(nodes.nodes["n1"])["cameras"].items()}
    moved = {c for c in six if before[c] != after[c]}
    assert len(moved) <= 3 and all(after[c] == "n4" for c in moved), (before, after)

    # 2: kill -9 the node with the most cameras: they are online elsewhere within lease_s + 5 s, events go on
    victim = max(("n1", "n2", "n3", "n4"), key=lambda n: sum(1 for o in after.values() if o == n))
    lost = {c for c, n in after.items() if n == victim}
    pid = nodes.nodes[victim].pid
    assert pid is not None and lost
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    survivor = next(s for n, s in nodes.nodes.items() if n != victim)
    with survivor.client(timeout_s=10) as http:  # a camera whose node just died: an answer, never a hang or a 500
        orphan = http.get(f"/api/cameras/{min(lost)}/stats")
    assert orphan.status_code in (200, 503), orphan.text
    if orphan.status_code == 503:
        assert min(lost) in orphan.json()["detail"], orphan.text

    def moved_elsewhere() -> bool:
        owners = {c: v["node"] for c, v in cluster(survivor)["cameras"].items()}
        return all(owners.get(c) not in (None, victim) for c in lost)

    wait_for(moved_elsewhere, MOVE_BOUND_S, f"{sorted(lost)} leased by other nodes within lease_s + 5 s")
    until_settled(nodes, six, MOVE_BOUND_S + ONLINE_SLACK_S, "online elsewhere, one decoder each")
    # the new owners' events (camera.online, then the zone's) continue each camera's sequence under a new run
    wait_for(
        lambda: (
            {e.camera_id for t, e in stream(client) if t > killed_at and not e.run_id.endswith(f".{victim}")} >= lost
        ),
        30,
        "events from every moved camera after the kill",
    )
    wait_for(
        lambda: any(t > killed_at and e.camera_id in lost and e.type.startswith("zone.") for t, e in stream(client)),
        120,
        "zone events from the moved cameras after the kill",
    )

    # 3: SIGSTOP a node past its lease, then SIGCONT: nothing of its cameras is written after its lease expired
    frozen = max(nodes.live(), key=lambda n: len(decoders(nodes.nodes[n])))
    frozen_pid = nodes.nodes[frozen].pid
    assert frozen_pid is not None
    stale_runs = {(e.camera_id, e.run_id) for _, e in stream(client) if e.run_id.endswith(f".{frozen}")}
    stopped_at = time.time()
    os.kill(frozen_pid, signal.SIGSTOP)
    time.sleep(LEASE_S + 4)
    others = next(s for n, s in nodes.live().items() if n != frozen)
    taken = {c: v["node"] for c, v in cluster(others)["cameras"].items()}
    assert frozen not in taken.values(), f"{frozen}'s leases outlived lease_s while it was stopped: {taken}"
    os.kill(frozen_pid, signal.SIGCONT)
    until_settled(nodes, six, 60 + ONLINE_SLACK_S, "settled after SIGCONT")
    late = [
        (t, e) for t, e in stream(client) if (e.camera_id, e.run_id) in stale_runs and t > stopped_at + LEASE_S + 0.5
    ]  # 0.5 s: clock granularity of the entry ids against this process's clock
    assert not late, f"{frozen} wrote events after its lease expired: {late[:3]}"

    # 4: over everything so far, no event twice and no camera's seq repeated
    assert_no_repeats(stream(client))

    # 5b: SIGTERM releases the node's leases at once (released, not expired), its cameras move in seconds
    leaving = max(nodes.live(), key=lambda n: len(decoders(nodes.nodes[n])))
    held = [c for c, v in cluster(nodes.nodes[leaving])["cameras"].items() if v["node"] == leaving]
    survivor = next(s for n, s in nodes.live().items() if n != leaving)
    nodes.nodes[leaving].stop(timeout=30)
    assert f"released {len(held)} lease(s)" in nodes.nodes[leaving].log()
    wait_for(
        lambda: (
            not {c for c, v in cluster(survivor)["cameras"].items() if v["node"] == leaving}
            and set(cluster(survivor)["cameras"]) == six
        ),
        LEASE_S,
        "the leaver's cameras leased by others sooner than its leases could have expired",
    )
    until_settled(nodes, six, MOVE_BOUND_S + ONLINE_SLACK_S, "the leaver's cameras online elsewhere")
    assert_no_repeats(stream(client))


def test_rest_add_on_any_node_and_redis_restart(nodes: Nodes, redis_srv: RedisServer, clip_360p: Path) -> None:
    """Guarantees 6 and 7: a REST add reaches its owner and every node lists it; Redis restarted mid-run."""
    a, b = nodes.start("a", cameras=2), nodes.start("b", cameras=2)
    until_settled(nodes, {"cam0", "cam1"}, 180, "2 cameras settled on 2 nodes")
    body = {"id": "rest", "url": str(clip_360p), "loop": True, "detect_fps": 1}
    with a.client() as http:
        added = http.post("/api/cameras", json=body)
    assert added.status_code == 201, added.text
    three = {"cam0", "cam1", "rest"}
    until_settled(nodes, three, 60, "the REST camera running on its owner")
    owner = cluster(a)["cameras"]["rest"]["node"]
    assert decoders(nodes.nodes[owner]).count("rest") == 1
    for node in (a, b):
        listed = cameras(node)
        assert listed["rest"]["node"] == owner and listed["rest"]["state"] == "online"
        with node.client() as http:
            stats = http.get("/api/cameras/rest/stats")
        assert stats.status_code == 200 and stats.json()["camera_id"] == "rest", stats.text

    # previews of a camera another node runs come through any node: a snapshot, and MJPEG as it streams
    other = b if owner == "a" else a
    with other.client() as http:
        snap = http.get("/api/cameras/rest/snapshot.jpg")
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8", snap.text[:200]
        with http.stream("GET", "/api/cameras/rest/mjpeg") as mjpeg:
            assert mjpeg.status_code == 200
            got = b""
            for chunk in mjpeg.iter_bytes():
                got += chunk
                if b"\xff\xd9" in got:  # one whole JPEG came through
                    break
        assert b"\xff\xd8" in got

    # an event's snapshot stays with the node that made it (run_id "t<token>.<node>"); the other node finds it there
    events = redis.Redis.from_url(redis_srv.url)
    wait_for(lambda: any(e.bbox is not None for _, e in stream(events)), 120, "an event with a box")
    boxed = next(e for _, e in stream(events) if e.bbox is not None)
    maker = boxed.run_id.split(".", 1)[1]
    with (b if maker == "a" else a).client() as http:
        snap = http.get(f"/api/events/{boxed.id}/snapshot.jpg")
        assert snap.status_code == 200 and snap.content[:2] == b"\xff\xd8", snap.text[:200]
        assert http.get(f"/api/events/{'0' * 32}/snapshot.jpg").status_code == 404  # nobody has it

    # 7: Redis restarted without persistence: every key is gone; the nodes rebuild registry and leases
    doubles: list[tuple[float, str]] = []
    redis_srv.restart()
    restarted = time.monotonic()
    while time.monotonic() - restarted < 30:
        counts = Counter(c for s in nodes.live().values() for c in decoders(s))
        doubles += [(time.monotonic(), c) for c, n in counts.items() if n > 1]
        try:
            if settled(nodes, three):
                break
        except (httpx.HTTPError, KeyError, StopIteration):
            pass
        time.sleep(0.3)
    until_settled(nodes, three, 60, "registry and leases rebuilt after the Redis restart")
    for camera_id in {c for _, c in doubles}:
        times = [t for t, c in doubles if c == camera_id]
        assert max(times) - min(times) <= LEASE_S, f"{camera_id} ran on two nodes for longer than lease_s"
    assert set(cameras(b)) == three  # the REST-added camera survived in the rebuilt registry


def test_bad_input(nodes: Nodes, tmp_path: Path, person_model: Path) -> None:
    """Guarantee 8: a node id clash refuses to start; a missing redis_url names it; unreachable Redis is retried."""
    missing = tmp_path / "missing.yaml"
    missing.write_text(model_section(person_model) + "cluster: {node_id: x}\n")
    check = subprocess.run(
        [sys.executable, "-m", "streamsrv.cli", "serve", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2 and "cluster.redis_url" in check.stderr, check.stderr

    first = nodes.start("same")
    wait_for(lambda: any(n["id"] == "same" and n["alive"] for n in cluster(first)["nodes"]), 120, "node same joined")
    clash = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamsrv.cli",
            "serve",
            "--config",
            str(nodes.config("same", 0)),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert clash.returncode == 2, clash.stderr[-2000:]
    assert "node_id 'same' is already used by a live node" in clash.stderr and first.base_url in clash.stderr

    dead_port = free_port()
    nowhere = Nodes(tmp_path, f"redis://127.0.0.1:{dead_port}/0", person_model, nodes.clip)
    lonely = nowhere.start("lonely", cameras=1)
    try:
        with lonely.client(timeout_s=5) as http:
            wait_for(lambda: http.get("/healthz").status_code == 200, 60, "healthz answers", lonely)
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "unreachable" in (ready.json()["cluster_error"] or "")
        wait_for(lambda: "unreachable" in lonely.log() and "retrying" in lonely.log(), 30, "the error logged")
        started = time.monotonic()
        lonely.stop(timeout=30)
        assert time.monotonic() - started < 20 and lonely.returncode == 0
    finally:
        nowhere.close()
