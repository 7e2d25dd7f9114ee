"""The cluster-wide camera registry in Redis: every camera's config (rules inline) in one hash.

Any node's API changes it (``ClusterCameraRegistry``, the API's ``CameraRegistry`` in cluster mode); every change
is announced on ``CHANGES``, so the camera's owner applies it at once (its reconciler wakes on the message).
Cameras of the YAML file seed it when absent. If Redis lost it (restarted without persistence: the ``SEEDED``
marker is gone), nodes write back the registry they last read.

Example:
    >>> store = RegistryStore(client)  # doctest: +SKIP
    >>> store.seed([CameraConfig(id="door", url="rtsp://cam/1")])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from streamsrv.cluster.keys import CAMERAS, CHANGES, SEEDED
from streamsrv.config.models import CameraConfig, redact_url
from streamsrv.config.rules import RulesConfig, resolve_rules
from streamsrv.errors import ConflictError, NotFoundError
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.registry import Admit, CameraRegistry

log = logging.getLogger(__name__)


class RegistryStore:
    """Cameras in Redis; each write announces itself."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def load(self) -> dict[str, CameraConfig]:
        out = {}
        for key, raw in self.client.hgetall(CAMERAS).items():
            camera_id = key.decode() if isinstance(key, bytes) else key
            try:
                out[camera_id] = CameraConfig.model_validate_json(raw)
            except ValidationError as exc:
                # written by another version or by hand: skipped (and said), the others still run
                log.error("cluster registry: camera %s is not a valid camera config, skipped: %s", camera_id, exc)
        return dict(sorted(out.items()))

    def get(self, camera_id: str) -> CameraConfig:
        raw = self.client.hget(CAMERAS, camera_id)
        if raw is None:
            raise NotFoundError(f"camera {camera_id!r} not found")
        return CameraConfig.model_validate_json(raw)

    def seeded(self) -> bool:
        return bool(self.client.exists(SEEDED))

    def seed(self, cameras: Iterable[CameraConfig]) -> int:
        """Add the cameras the registry lacks (existing ones win), mark it seeded; how many were added."""
        pipe = self.client.pipeline(transaction=True)
        cams = list(cameras)
        for cam in cams:
            pipe.hsetnx(CAMERAS, cam.id, cam.model_dump_json())
        pipe.set(SEEDED, "1")
        pipe.publish(CHANGES, "seed")
        added = sum(int(r) for r in pipe.execute()[: len(cams)])
        return added

    def add(self, cam: CameraConfig) -> None:
        if not self.client.hsetnx(CAMERAS, cam.id, cam.model_dump_json()):
            raise ConflictError(f"id: camera {cam.id!r} already exists")
        self._changed(cam.id)

    def put(self, cam: CameraConfig) -> None:
        self.client.hset(CAMERAS, cam.id, cam.model_dump_json())
        self._changed(cam.id)

    def delete(self, camera_id: str) -> None:
        if not self.client.hdel(CAMERAS, camera_id):
            raise NotFoundError(f"camera {camera_id!r} not found")
        self._changed(camera_id)

    def _changed(self, camera_id: str) -> None:
        self.client.publish(CHANGES, f"camera {camera_id}")


def inline_rules(cam: CameraConfig, base_dir: Path | None) -> CameraConfig:
    """``cam`` with its rules read in: other nodes may not have its rules file."""
    if cam.rules is None or isinstance(cam.rules, RulesConfig):
        return cam
    return cam.model_copy(update={"rules": resolve_rules(cam.rules, base_dir, cam.id)})


class ClusterCameraRegistry(CameraRegistry):
    """The API's camera registry in cluster mode: changes go to Redis, and the camera's owner applies them.

    The same checks as on a single server (file access, rules, motion); last writer wins between nodes. The
    config file is not rewritten: the registry in Redis is the store.
    """

    def __init__(self, server: ServerApi, store: RegistryStore, base_dir: Path | None, wake: Callable[[], None]):
        super().__init__(server, None)
        self.cluster = store
        self._base_dir = base_dir
        self._wake = wake  # the local reconciler: a camera added here may be this node's

    @property
    def base_dir(self) -> Path:
        return self._base_dir or Path.cwd()

    def cameras(self) -> list[CameraConfig]:
        return list(self.cluster.load().values())

    def get(self, camera_id: str) -> CameraConfig:
        return self.cluster.get(camera_id)

    def add(self, cam: CameraConfig, admit: Admit | None = None) -> CameraConfig:
        with self._lock:
            cam = inline_rules(self._checked_new(cam, admit), self.base_dir)
            self.cluster.add(cam)
        self._wake()
        log.info("camera %s added to the cluster: %s", cam.id, redact_url(cam.url))
        return cam

    def replace(self, cam: CameraConfig, admit: Admit | None = None) -> CameraConfig:
        with self._lock:
            old = self.cluster.get(cam.id)
            cam = self._checked_change(old, self._replacement(old, cam), admit)
            self.cluster.put(inline_rules(cam, self.base_dir))
        self._wake()
        return cam

    def update(self, camera_id: str, changes: Mapping[str, Any], admit: Admit | None = None) -> CameraConfig:
        with self._lock:
            old = self.cluster.get(camera_id)
            cam = self._checked_change(old, self._patched(old, changes), admit)
            self.cluster.put(inline_rules(cam, self.base_dir))
        self._wake()
        return cam

    def remove(self, camera_id: str) -> None:
        with self._lock:
            self.cluster.delete(camera_id)
        self._wake()
        log.info("camera %s removed from the cluster", camera_id)

    def rules(self, camera_id: str) -> RulesConfig:
        return resolve_rules(self.cluster.get(camera_id).rules, self.base_dir, camera_id)

    def edit_rules(self, camera_id: str, edit: Callable[[RulesConfig], RulesConfig]) -> RulesConfig:
        with self._lock:
            cam = self.cluster.get(camera_id)
            rules = edit(resolve_rules(cam.rules, self.base_dir, camera_id))
            self.cluster.put(cam.model_copy(update={"rules": rules}))
        self._wake()
        return rules
