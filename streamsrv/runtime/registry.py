"""The camera registry: cameras and their rules as the API changes them, applied live and saved.

Every change goes to the running ``StreamServer`` first (only the camera concerned restarts) and then, when
``server.persist`` is on and the server was started from a config file, into that file, so it survives a restart.

What is stored where:

- The config file is the store. Its ``cameras`` section is rewritten atomically (temp file, fsync, rename) from
  the running registry; every other section is kept as it is on disk at that moment. Comments are not kept
  (the hand-written original is saved once beside it as ``<file>.bak``).
- A camera whose ``rules`` name a file keeps them there: rule edits rewrite that file. If another camera uses
  the same file, the edited camera's rules are written inline instead, so the other camera is not changed.
- Values the file wrote as ``${ENV}`` references (camera passwords) or as relative paths stay written that way
  while the value is unchanged; a value changed through the API is written as given.

What wins: the file is read once, at start, and is the whole truth then. While the server runs, the registry
wins for the ``cameras`` section: a hand edit of that section is overwritten by the next API change (the edited
file is saved as ``<file>.bak`` first and a warning logged); hand edits of other sections are kept and apply at
the next start.

Example:
    >>> registry = CameraRegistry(server, ConfigFileStore(Path("streamsrv.yaml")))  # doctest: +SKIP
    >>> registry.add(CameraConfig(id="door", url="rtsp://cam/1"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from streamsrv.config.file_access import check_file_access
from streamsrv.config.loader import parse_config
from streamsrv.config.models import CameraConfig, redact_url
from streamsrv.config.motion import refresh_error
from streamsrv.config.rules import RulesConfig, resolve_rules, save_rules
from streamsrv.errors import ConfigError, ConflictError, StreamsrvError
from streamsrv.fileio import atomic_write_text
from streamsrv.runtime.protocol import ServerApi

log = logging.getLogger(__name__)
# Admission control: raises (CapacityRefused) when the new config of a camera (the old one, or None) does not fit.
Admit = Callable[[CameraConfig, CameraConfig | None], None]

REDACTED_PASSWORD = ":***@"
# Fields whose change needs no decoder restart: they are applied in place.
_LIVE_FIELDS = frozenset({"name", "rules", "priority", "max_frame_age_ms"})


class PersistError(StreamsrvError):
    """A change was applied to the running server but could not be written to the config file."""


def field_error(field: str, message: str, value: Any) -> ValidationError:
    """A pydantic ValidationError for one field, so API errors have one shape whoever found the problem."""
    detail = InitErrorDetails(
        type=PydanticCustomError("value_error", "Value error, {reason}", {"reason": message}),
        loc=(field,),
        input=value,
    )
    return ValidationError.from_exception_data("CameraConfig", [detail])


def absolute_url(url: str, base_dir: Path) -> str:
    """A local relative path made absolute against ``base_dir`` (as the loader does for the file); URLs unchanged.

    >>> absolute_url("clips/a.mp4", Path("/etc/streamsrv")), absolute_url("rtsp://cam/1", Path("/x"))
    ('/etc/streamsrv/clips/a.mp4', 'rtsp://cam/1')
    """
    path = url.removeprefix("file://")
    if "://" in path or path.startswith("/"):
        return url
    return str((base_dir / path).resolve())


class ConfigFileStore:
    """Writes the registry into the YAML config file it came from."""

    HEADER = "# Cameras below are managed by streamsrv: API changes rewrite this file (comments are not kept).\n"

    def __init__(self, path: Path) -> None:
        # Writing through a symlink must update its target, not replace the link with a plain file.
        self.path = path.resolve()
        self.base_dir = self.path.parent
        if not os.access(self.base_dir, os.W_OK):
            raise ConfigError(
                f"{self.path}: server.persist is true but {self.base_dir} is not writable; "
                "make it writable or set server.persist: false"
            )
        self._last_text: str | None = None  # what this process last wrote

    def save_cameras(self, cameras: Sequence[CameraConfig]) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
            raw = yaml.safe_load(text) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PersistError(f"{self.path}: cannot read the config file to update it: {exc}") from None
        if not isinstance(raw, dict):
            raise PersistError(f"{self.path}: the top level is not a mapping; not rewriting it")
        old = {e["id"]: e for e in raw.get("cameras") or [] if isinstance(e, dict) and isinstance(e.get("id"), str)}
        raw["cameras"] = [self._entry(cam, old.get(cam.id)) for cam in cameras]
        # flow style for the innermost lists and mappings keeps points on one line: [[0, 400], [1280, 400]]
        new_text = self.HEADER + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None)
        if text != self._last_text:
            if self._last_text is not None:
                log.warning(
                    "%s changed on disk since streamsrv wrote it; the running cameras replace its cameras "
                    "section (the edited file is saved as %s)",
                    self.path,
                    self.backup_path.name,
                )
            self._backup()
        try:
            atomic_write_text(self.path, new_text)
        except OSError as exc:
            raise PersistError(f"{self.path}: cannot write the config file: {exc.strerror or exc}") from None
        self._last_text = new_text

    def save_rules(self, rules: RulesConfig, rules_path: str) -> None:
        path = Path(rules_path)
        path = path if path.is_absolute() else self.base_dir / path
        try:
            save_rules(rules, path)
        except OSError as exc:
            raise PersistError(f"{path}: cannot write the rules file: {exc.strerror or exc}") from None

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def _backup(self) -> None:
        try:
            shutil.copy2(self.path, self.backup_path)
        except OSError as exc:
            raise PersistError(f"{self.backup_path}: cannot save a backup before rewriting: {exc}") from None

    def _entry(self, cam: CameraConfig, old: Mapping[str, Any] | None) -> dict[str, Any]:
        fresh: dict[str, Any] = cam.model_dump(mode="json", exclude_defaults=True)
        loaded = self._load_entry(old) if old is not None else None
        if old is None or loaded is None:
            return fresh
        # Keep each value as written (an ${ENV} reference, a relative path) while it means what runs now.
        out = {k: v for k, v in old.items() if k in CameraConfig.model_fields and getattr(loaded, k) == getattr(cam, k)}
        for key, value in fresh.items():
            out.setdefault(key, value)
        return out

    def _load_entry(self, entry: Mapping[str, Any]) -> CameraConfig | None:
        # Through the loader, so ${ENV} and relative paths are read exactly as at start.
        try:
            cfg = parse_config(yaml.safe_dump({"cameras": [dict(entry)]}), str(self.path), self.base_dir)
        except ConfigError:
            return None
        return cfg.cameras[0]


class CameraRegistry:
    """Adds, changes and removes cameras and their rules at runtime; thread-safe (one change at a time)."""

    def __init__(self, server: ServerApi, store: ConfigFileStore | None = None) -> None:
        self.server = server
        self.store = store
        self._lock = threading.Lock()

    @property
    def base_dir(self) -> Path:
        return self.store.base_dir if self.store else (self.server.cfg.base_dir or Path.cwd())

    # -- cameras -----------------------------------------------------------------------------
    def cameras(self) -> list[CameraConfig]:
        return list(self.server.cfg.cameras)

    def get(self, camera_id: str) -> CameraConfig:
        """Raises NotFoundError."""
        return self.server.camera_config(camera_id)

    def add(self, cam: CameraConfig, admit: Admit | None = None) -> CameraConfig:
        """Register and start a camera, if ``admit`` lets it. Raises ConflictError, or ValidationError naming the
        field."""
        with self._lock:
            if any(c.id == cam.id for c in self.server.cfg.cameras):
                raise ConflictError(f"id: camera {cam.id!r} already exists")
            cam = self._checked_new(cam, admit)
            self.server.add_camera(cam)
            self._save()
        log.info("camera %s added: %s", cam.id, redact_url(cam.url))
        return cam

    def replace(self, cam: CameraConfig, admit: Admit | None = None) -> CameraConfig:
        """Apply a whole new config to an existing camera; only that camera restarts, and only if it must."""
        with self._lock:
            old = self.server.camera_config(cam.id)
            cam = self._checked_change(old, self._replacement(old, cam), admit)
            self._apply(old, cam)
        return cam

    def update(self, camera_id: str, changes: Mapping[str, Any], admit: Admit | None = None) -> CameraConfig:
        """Change some top-level fields of a camera (a PATCH); an omitted or redacted ``url`` keeps the real one."""
        with self._lock:
            old = self.server.camera_config(camera_id)
            cam = self._checked_change(old, self._patched(old, changes), admit)
            self._apply(old, cam)
        return cam

    def remove(self, camera_id: str) -> None:
        """Stop and forget a camera. Raises NotFoundError."""
        with self._lock:
            self.server.remove_camera(camera_id)
            self._save()
        log.info("camera %s removed", camera_id)

    # -- rules -------------------------------------------------------------------------------
    def rules(self, camera_id: str) -> RulesConfig:
        return self.server.rules(camera_id)

    def edit_rules(self, camera_id: str, edit: Callable[[RulesConfig], RulesConfig]) -> RulesConfig:
        """Replace a camera's rules by ``edit(current)``, atomically with respect to other changes."""
        with self._lock:
            cam = self.server.camera_config(camera_id)
            rules = edit(self.server.rules(camera_id))
            self.server.update_rules(camera_id, rules)
            if isinstance(cam.rules, str) and self.store is not None and not self._shared_rules_file(cam):
                self.store.save_rules(rules, cam.rules)
            else:
                # in memory too, so a later restart of this camera's decoder does not reload stale rules
                self._set_camera(cam.model_copy(update={"rules": rules}))
                self._save()
        log.info("camera %s: rules now %d zone(s), %d line(s)", camera_id, len(rules.zones), len(rules.lines))
        return rules

    # -- internals ---------------------------------------------------------------------------
    def _checked_new(self, cam: CameraConfig, admit: Admit | None) -> CameraConfig:
        """A camera to add, as it will run, once it passed every check and ``admit``."""
        if REDACTED_PASSWORD in cam.url:
            raise field_error("url", "contains a redacted password (***); send the real one", redact_url(cam.url))
        cam = self._prepared(cam)
        if admit is not None:
            admit(cam, None)
        return cam

    def _checked_change(self, old: CameraConfig, cam: CameraConfig, admit: Admit | None) -> CameraConfig:
        """A camera's new config, as it will run, once it passed every check and ``admit``."""
        cam = self._prepared(cam, old.url)
        if admit is not None:
            admit(cam, old)
        return cam

    def _replacement(self, old: CameraConfig, cam: CameraConfig) -> CameraConfig:
        """``cam`` replacing ``old`` (a PUT): a redacted URL sent back means the real one."""
        return cam.model_copy(update={"url": self._keep_secret(old.url, cam.url)})

    def _patched(self, old: CameraConfig, changes: Mapping[str, Any]) -> CameraConfig:
        """``old`` with some top-level fields changed (a PATCH); an omitted or redacted ``url`` keeps the real one."""
        data = old.model_dump()
        data.update(changes)
        if isinstance(data["url"], str):
            data["url"] = self._keep_secret(old.url, data["url"])
        return CameraConfig.model_validate(data)

    def _prepared(self, cam: CameraConfig, old_url: str | None = None) -> CameraConfig:
        """``cam`` as it will run; ValidationError when a field may not be given through the API.

        A changed URL may read server files only inside ``server.allowed_file_dirs``; an unchanged one was written
        by the operator (the config file may point anywhere).
        """
        cam = cam.model_copy(update={"url": absolute_url(cam.url, self.base_dir)})
        if cam.url != old_url:
            try:
                check_file_access(cam.url, self.server.cfg.server.allowed_file_dirs, self.base_dir)
            except ValueError as exc:
                raise field_error("url", str(exc), redact_url(cam.url)) from None
        try:
            resolve_rules(cam.rules, self.base_dir, cam.id)
        except ConfigError as exc:
            raise field_error("rules", str(exc), cam.rules) from None
        if problem := refresh_error(cam.motion, self.server.cfg.tracker.lost_track_s):
            raise field_error("motion", problem, cam.motion.model_dump())
        return cam

    @staticmethod
    def _keep_secret(old_url: str, new_url: str) -> str:
        # A client that sends back the redacted URL it was shown means "unchanged", never "password is ***".
        if new_url == redact_url(old_url):
            return old_url
        if REDACTED_PASSWORD in new_url:
            raise field_error(
                "url", "contains a redacted password (***); send the real one or omit url", redact_url(new_url)
            )
        return new_url

    def _apply(self, old: CameraConfig, cam: CameraConfig) -> None:
        restart = old.model_dump(exclude=set(_LIVE_FIELDS)) != cam.model_dump(exclude=set(_LIVE_FIELDS))
        if restart:
            order = [c.id for c in self.server.cfg.cameras]
            self.server.replace_camera(cam)
            # replace_camera appends; keep the camera where it was (in the list and in the file)
            by_id = {c.id: c for c in self.server.cfg.cameras}
            self.server.cfg.cameras = [by_id[i] for i in order if i in by_id]
        else:
            if cam.rules != old.rules:
                self.server.update_rules(cam.id, resolve_rules(cam.rules, self.base_dir, cam.id))
            self._set_camera(cam)
        self._save()
        log.info("camera %s changed%s: %s", cam.id, " (restarted)" if restart else "", redact_url(cam.url))

    def _set_camera(self, cam: CameraConfig) -> None:
        self.server.cfg.cameras = [cam if c.id == cam.id else c for c in self.server.cfg.cameras]

    def _shared_rules_file(self, cam: CameraConfig) -> bool:
        mine = (self.base_dir / str(cam.rules)).resolve()
        return any(
            c.id != cam.id and isinstance(c.rules, str) and (self.base_dir / c.rules).resolve() == mine
            for c in self.server.cfg.cameras
        )

    def _save(self) -> None:
        if self.store is not None:
            self.store.save_cameras(self.server.cfg.cameras)
