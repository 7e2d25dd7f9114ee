"""The node's reconciler: heartbeats, works out its share of the cameras, and holds their leases.

Every ``lease_s / 3`` (and at once when another node announces a change on ``CHANGES``) the reconciler renews the
heartbeat, reads the registry, the live nodes and the leases, computes the assignment
(``streamsrv.cluster.assignment``) and then: renews the leases it holds; hands over cameras that are no longer its
share (stop, flush their events, release the lease); acquires free leases of cameras that are; applies config
changes to the cameras it runs. Starting and stopping cameras happens on a second thread (``CameraActuator``), so
a slow decoder start never delays a renewal.

A camera stops at once when its lease is lost or its local deadline (counted from before the last renewal was
sent) passes, and events are fenced (``fence``), so a node that stalled past its lease writes nothing for cameras
it no longer owns. Redis unreachable: the node logs it, retries with back-off, and reports not ready; the HTTP
API stays up. On ``stop`` every lease is released, so cameras move in seconds rather than after ``lease_s``.

Example:
    >>> node = ClusterNode(cfg, server, "http://10.0.0.7:8080"); node.start()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from streamsrv.cluster.actuator import CameraActuator
from streamsrv.cluster.assignment import assign
from streamsrv.cluster.keys import CHANGES, lease_key, node_key, seq_key
from streamsrv.cluster.leases import Lease, Leases, LeaseValue
from streamsrv.cluster.membership import Membership, NodeIdClash, NodeInfo
from streamsrv.cluster.registry import RegistryStore, inline_rules
from streamsrv.config.cluster import ClusterConfig
from streamsrv.config.models import AppConfig, CameraConfig, redact_url
from streamsrv.events.model import Event
from streamsrv.events.redis_bus import RedisBus
from streamsrv.events.redis_fence import Fence
from streamsrv.events.redis_stream import REDIS_DOWN, redis_client
from streamsrv.runtime.server import StreamServer

log = logging.getLogger(__name__)
_BACKOFF_MAX_S = 5.0
_MIN_TICK_GAP_S = 0.1
_REREAD_EVERY = 10
_DEAD = NodeInfo("", "")  # alive: False  # announcements arriving in a burst cause one reconcile, not one each


class ClusterNode:
    """One node's membership, leases and cameras; thread-safe. ``on_fatal`` is called on a node id clash."""

    def __init__(
        self,
        cfg: AppConfig,
        server: StreamServer,
        bus: RedisBus,
        url: str,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        assert cfg.cluster is not None
        self.cfg: ClusterConfig = cfg.cluster
        self.node_id, self.url, self.server, self.bus = self.cfg.node_id, url, server, bus
        self.on_fatal = on_fatal  # called (from the reconciler) when the node must not go on: a node id clash
        self.fatal: str | None = None
        self.client = redis_client(self.cfg.redis_url, min(2.0, self.cfg.lease_s / 3))
        self.membership = Membership(self.client, self.node_id, self.cfg.lease_s)
        self.leases = Leases(self.client, self.node_id, self.cfg.lease_s)
        self.store = RegistryStore(self.client)
        self._seed = [inline_rules(c, cfg.base_dir) for c in cfg.cameras]
        self._known: dict[str, CameraConfig] = {}  # the registry as last read: written back if Redis loses it
        self._lock = threading.Lock()
        self._owned: dict[str, Lease] = {}
        self._runs: dict[str, str] = {}  # camera -> run_id of the engine started under the lease held
        self._leaving: set[str] = set()
        self._floors: dict[str, int] = {}  # camera -> highest fencing token seen
        self._wake = threading.Event()
        self._changed = threading.Event()  # a registry change was announced: read it again
        self._rounds = 0
        self._soon: float | None = None  # seconds to the next expiry worth a round of its own
        self._stopping = threading.Event()
        self._draining = threading.Event()  # stopping: renew what is held, take and hand over nothing
        self.joined = False
        self.error: str | None = "not connected to Redis yet"
        self.counts = {"acquired": 0, "lost": 0, "released": 0, "redis_errors": 0}
        self.actuator = CameraActuator(server, self.client, self.node_id, self._owns, self._release, bus.flush)
        self._threads = [
            threading.Thread(target=self._run, name="cluster-reconciler", daemon=True),
            threading.Thread(target=self._listen, name="cluster-changes", daemon=True),
        ]

    @property
    def tick_s(self) -> float:
        return self.cfg.lease_s / 3

    # -- life cycle ----------------------------------------------------------------------------------------------
    def check_clash(self) -> None:
        """Before serving: raise ``NodeIdClash`` if a live node has this id; nothing if Redis is unreachable (the
        reconciler checks once it is)."""
        try:
            self.membership.check_clash()
        except REDIS_DOWN as exc:
            log.error("cluster: Redis at %s unreachable (%s); retrying", redact_url(self.cfg.redis_url), exc)

    def start(self) -> None:
        self.actuator.start()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop every camera, deliver their last events, release every lease and leave: cameras move at once.

        Meanwhile the reconciler keeps renewing (and only that), so slow decoder stops cannot let a lease lapse.
        """
        self._draining.set()
        self._wake.set()
        self.actuator.stop()  # runs what was queued first
        self.actuator.stop_all_now()
        self.bus.flush(5.0)
        self._stopping.set()
        self._wake.set()
        self._threads[0].join(timeout=self.cfg.lease_s)
        with self._lock:
            held = list(self._owned.values())
            self._owned.clear()
            self._runs.clear()
        try:
            released = self.leases.release(held)
            self.membership.leave()
            log.info("cluster: node %s left, released %d lease(s)", self.node_id, released)
        except REDIS_DOWN as exc:
            log.warning("cluster: could not release leases (%s); they expire after %.0f s", exc, self.cfg.lease_s)
        self.client.close()

    def wake(self) -> None:
        self._wake.set()

    def registry_changed(self) -> None:
        """This node's API changed the registry: read it and reconcile now."""
        self._changed.set()
        self._wake.set()

    @property
    def ready(self) -> bool:
        return self.joined and self.error is None

    # -- what other parts ask ------------------------------------------------------------------------------------
    def fence(self, event: Event) -> Fence | None:
        """The bus's fence: the lease this node holds for the event's camera, if its local deadline has not passed
        and the event was made by the run started under it (not by a run that lost the camera before)."""
        with self._lock:
            lease = self._owned.get(event.camera_id)
            run_id = self._runs.get(event.camera_id)
        if lease is None or time.monotonic() >= lease.deadline or event.run_id != run_id:
            return None
        return Fence(lease_key(event.camera_id), lease.value.raw, seq_key(event.camera_id))

    def owned(self) -> list[str]:
        with self._lock:
            return sorted(self._owned)

    def _owns(self, camera_id: str, token: int) -> bool:
        with self._lock:
            lease = self._owned.get(camera_id)
        return lease is not None and lease.value.token == token and time.monotonic() < lease.deadline

    # -- the loop ------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.5
        last = 0.0
        while not self._stopping.is_set():
            self._expire()
            try:
                time.sleep(max(0.0, _MIN_TICK_GAP_S - (time.monotonic() - last)))
                last = time.monotonic()
                self._tick()
            except NodeIdClash as exc:
                self._fatal(str(exc))
                return
            except (*REDIS_DOWN, redis.RedisError) as exc:
                self._redis_down(exc)
                self._wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            except Exception:  # a bug must not end the node's leases silently: log it, retry
                log.exception("cluster: reconcile failed")
                self._wait(delay)
                continue
            delay = 0.5
            self._wait(self.tick_s if self._soon is None else min(self.tick_s, self._soon))

    def _wait(self, timeout_s: float) -> None:
        with self._lock:
            deadlines = [lease.deadline for lease in self._owned.values()]
        if deadlines:  # wake when a lease would run out, to stop its camera at once
            timeout_s = min(timeout_s, max(0.0, min(deadlines) - time.monotonic()) + 0.01)
        self._wake.wait(timeout_s)
        self._wake.clear()

    def _expire(self) -> None:
        """Stop the cameras whose local lease deadline passed (no renewal got through in time)."""
        now = time.monotonic()
        with self._lock:
            expired = [c for c, lease in self._owned.items() if now >= lease.deadline]
        for camera_id in expired:
            self._lose(camera_id, "its lease ran out before a renewal got through")

    def _redis_down(self, exc: Exception) -> None:
        self.counts["redis_errors"] += 1
        message = f"Redis at {redact_url(self.cfg.redis_url)} unreachable: {type(exc).__name__}: {exc}"
        if self.error != message:
            log.error("cluster: %s; retrying with back-off (not ready meanwhile)", message)
        self.error = message

    def _fatal(self, message: str) -> None:
        log.error("cluster: %s", message)
        self.error = self.fatal = message
        self.joined = False
        for camera_id in self.owned():
            self._lose(camera_id, "this node's id clashes with another node")
        if self.on_fatal is not None:
            self.on_fatal(message)

    def _tick(self) -> None:
        if not self.joined:
            self.membership.check_clash()
        if not self.membership.beat(self._info()):
            raise NodeIdClash(f"cluster.node_id {self.node_id!r} was taken over by another live node")
        if not self.joined:
            log.info("cluster: node %s joined at %s", self.node_id, self.url)
        self.joined, self.error = True, None
        if self._draining.is_set():
            self._renew({})
            return
        if not self.store.seeded():
            added = self.store.seed(self._known.values() if self._known else self._seed)
            self._changed.set()
            log.info("cluster: seeded the camera registry with %d camera(s)", added)
        cameras = self._registry()
        nodes = self.membership.nodes()
        live = {n: i.capacity for n, i in nodes.items() if i.alive}
        live[self.node_id] = self.cfg.capacity
        share = set(assign([c for c, cam in cameras.items() if cam.enabled], live).cameras_of(self.node_id))
        holders = self.leases.holders(list(cameras))
        for camera_id, value in holders.items():
            if value is not None:
                self._floors[camera_id] = max(self._floors.get(camera_id, 0), value.token)
        self._renew(holders)
        with self._lock:
            owned, leaving = set(self._owned), set(self._leaving)
        for camera_id in sorted(owned - share - leaving):
            self._hand_over(camera_id)
        for camera_id in sorted(share - owned):
            if holders.get(camera_id) is None:
                self._acquire(cameras[camera_id])
        for camera_id in sorted(owned & share):
            self.actuator.apply(cameras[camera_id])
        self._soon = self._next_expiry(nodes, share - owned, holders)

    def _next_expiry(
        self, nodes: dict[str, NodeInfo], wanted: set[str], holders: dict[str, LeaseValue | None]
    ) -> float | None:
        """Seconds until the next key that matters expires: the heartbeat of a node that stopped beating (its
        cameras are then shared out again) or a dead node's lease on a camera of this node's share. The next round
        runs right then instead of up to ``lease_s / 3`` later. Redis's own clock decides (PTTL), not the nodes'."""
        now = time.time()
        keys = [node_key(n) for n, i in nodes.items() if i.alive and n != self.node_id and now - i.ts > self.tick_s]
        keys += [
            lease_key(c) for c in wanted if (h := holders.get(c)) is not None and not nodes.get(h.node, _DEAD).alive
        ]
        left = [s for s in self.leases.seconds_left(keys) if s > 0]
        return min(left) + 0.02 if left else None

    def _registry(self) -> dict[str, CameraConfig]:
        """The registry, read again only when a change was announced or every few rounds (a missed announcement
        costs at most ``_REREAD_EVERY`` rounds): it is the biggest read of a round."""
        self._rounds += 1
        if self._changed.is_set() or not self._known or self._rounds % _REREAD_EVERY == 0:
            self._changed.clear()
            self._known = self.store.load()
        return self._known

    def _renew(self, holders: dict[str, LeaseValue | None]) -> None:
        with self._lock:
            held = list(self._owned.values())
        for camera_id, lease in self.leases.renew(held).items():
            if lease is not None:
                with self._lock:
                    if camera_id in self._owned:
                        self._owned[camera_id] = lease
            elif holders.get(camera_id) is None and self._retake(camera_id):
                continue  # Redis lost the key (restarted) and nobody took it: still ours, under a new token
            else:
                self._lose(camera_id, "another node holds its lease now")

    def _retake(self, camera_id: str) -> bool:
        with self._lock:
            old = self._owned.get(camera_id)
        if old is None or time.monotonic() >= old.deadline:
            return False
        got = self.leases.acquire(camera_id, self._floors.get(camera_id, old.value.token))
        if not isinstance(got, Lease):
            return False
        self._floors[camera_id] = got.value.token
        with self._lock:
            self._owned[camera_id] = got
        log.warning("cluster: camera %s: lease lost by Redis, retaken with token %d", camera_id, got.value.token)
        return True

    def _acquire(self, cam: CameraConfig) -> None:
        got = self.leases.acquire(cam.id, self._floors.get(cam.id, 0))
        if not isinstance(got, Lease):
            return
        self._floors[cam.id] = got.value.token
        run_id = f"t{got.value.token}.{self.node_id}"[:64]
        with self._lock:
            self._owned[cam.id] = got
            self._runs[cam.id] = run_id
        self.counts["acquired"] += 1
        log.info("cluster: camera %s acquired (token %d)", cam.id, got.value.token)
        self.actuator.start_camera(cam, got.value.token, run_id)

    def _lose(self, camera_id: str, why: str) -> None:
        with self._lock:
            lease = self._owned.pop(camera_id, None)
            self._runs.pop(camera_id, None)
            self._leaving.discard(camera_id)
        if lease is None:
            return
        self.counts["lost"] += 1
        log.warning("cluster: camera %s stopped at once: %s", camera_id, why)
        self.actuator.stop_camera(camera_id, release=None)

    def _hand_over(self, camera_id: str) -> None:
        with self._lock:
            lease = self._owned.get(camera_id)
            if lease is None:
                return
            self._leaving.add(camera_id)
        log.info("cluster: camera %s is another node's share now; handing it over", camera_id)
        self.actuator.stop_camera(camera_id, release=lease)

    def _release(self, lease: Lease) -> None:
        """After its camera stopped and its events went out (the actuator's thread): drop the lease."""
        with self._lock:
            if self._owned.get(lease.camera_id) != lease and lease.camera_id in self._owned:
                lease = self._owned[lease.camera_id]  # renewed meanwhile: same value, newer deadline
            self._owned.pop(lease.camera_id, None)
            self._runs.pop(lease.camera_id, None)
            self._leaving.discard(lease.camera_id)
        try:
            if self.leases.release([lease]):
                self.counts["released"] += 1
            self.client.publish(CHANGES, f"release {lease.camera_id}")
        except REDIS_DOWN as exc:
            log.warning("cluster: camera %s: lease not released (%s); it expires by itself", lease.camera_id, exc)

    def _info(self) -> NodeInfo:
        stats = self.server.all_camera_stats()
        # busy: the share of each second the model spends on batches, from each camera's frames and batch means
        busy = sum(s.processed_fps * s.inference_ms_mean / 1000 / max(s.batch_size_mean, 1.0) for s in stats)
        return NodeInfo(
            id=self.node_id,
            url=self.url,
            capacity=self.cfg.capacity,
            cameras=self.owned(),
            states={s.camera_id: s.state.value for s in stats},
            processed_fps=round(sum(s.processed_fps for s in stats), 2),
            inference_busy=round(min(1.0, busy), 3),
        )

    def _listen(self) -> None:
        """Wake the reconciler whenever any node announces a change (registry, join, leave, release)."""
        delay = 0.5
        while not self._stopping.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANGES)
                self._changed.set()  # announcements may have been missed while not subscribed
                delay = 0.5
                while not self._stopping.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        self._changed.set()
                        self._wake.set()
            except (*REDIS_DOWN, redis.RedisError):
                self._stopping.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            finally:
                pubsub.close()
