"""Where a job reads its clip: a checked stream URL or server path, or an uploaded clip in the spool directory.

A job may read what a camera may (``CameraConfig``'s URL checks), and files only inside ``jobs.allowed_file_dir``.
Uploads wait in the spool (``jobs.spool_dir``, or a temporary directory of the server's own) until their job ends.

>>> check_source("rtsp://cam.local/stream", allowed_file_dir=None)
'rtsp://cam.local/stream'
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from streamsrv.config.models import CameraConfig
from streamsrv.jobs.store import StoredJob

STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps")
_UPLOAD_PREFIX = "upload-"


def check_source(url: str, allowed_file_dir: str | None) -> str:
    """The URL or server path a job may read; ValueError naming what is wrong otherwise."""
    try:
        CameraConfig(id="job", url=url)  # what a camera's URL may be, a job's may be
    except ValidationError as exc:
        raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in STREAM_SCHEMES:
        return url
    if allowed_file_dir is None:
        raise ValueError("this server reads no files for jobs (jobs.allowed_file_dir is not set); upload the clip")
    root = Path(allowed_file_dir).resolve()
    path = (root / url.removeprefix("file://")).resolve()  # an absolute path replaces root
    if not path.is_relative_to(root):
        raise ValueError(f"{url!r} is outside the directory jobs may read (jobs.allowed_file_dir)")
    if not path.is_file():
        raise ValueError(f"{url!r} is not a file in the directory jobs may read")
    return str(path)


class Spool:
    """The directory uploaded clips wait in: ``spool_dir``, or without one a temporary directory made in ``open``
    and removed in ``close`` (nothing could resume its uploads after a restart anyway)."""

    def __init__(self, spool_dir: str | None) -> None:
        self._own = spool_dir is None
        self.dir = Path(spool_dir or tempfile.gettempdir())

    def open(self) -> None:
        if self._own:
            self.dir = Path(tempfile.mkdtemp(prefix="streamsrv-jobs-"))
        self.dir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_file(self, suffix: str) -> Path:
        """A fresh path for an uploaded clip (the caller writes it), keeping a plain suffix such as ``.mp4``."""
        clean = suffix.lower() if suffix[1:].isascii() and suffix[1:].isalnum() and len(suffix) <= 9 else ""
        return self.dir / f"{_UPLOAD_PREFIX}{uuid.uuid4().hex}{clean}"

    def drop(self, stored: StoredJob) -> None:
        """Remove a job's uploaded clip, if it has one."""
        if stored.spooled:
            Path(stored.source).unlink(missing_ok=True)

    def sweep(self, keep: set[str]) -> None:
        """Remove every upload but those named in ``keep`` (left by an earlier run that nothing will resume)."""
        for path in self.dir.glob(f"{_UPLOAD_PREFIX}*"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
