"""Where a job reads its clip: a checked stream URL or server path, or an uploaded clip in the spool directory.

A job may read what a camera may (``CameraConfig``'s URL checks), and files only inside ``jobs.allowed_file_dir``.
Its stream URL may not lead to a link-local address or a cloud metadata service (where a cloud server's own
credentials are served) unless ``jobs.allow_link_local_urls``: the job's result would show what it answered.
Uploads wait in the spool (``jobs.spool_dir``, or a temporary directory of the server's own) until their job ends.

>>> check_source("rtsp://10.0.0.5/stream", allowed_file_dir=None)
'rtsp://10.0.0.5/stream'
>>> metadata_host("http://169.254.169.254/latest/meta-data/"), metadata_host("http://[fd00:ec2::254]/")
('169.254.169.254', 'fd00:ec2::254')
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError

from streamsrv.config.models import CameraConfig
from streamsrv.jobs.store import StoredJob

STREAM_SCHEMES = ("http", "https", "rtsp", "rtsps")
_UPLOAD_PREFIX = "upload-"
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
# Link-local (AWS, GCP, Azure, OpenStack metadata at 169.254.169.254), AWS's IPv6 metadata, Alibaba's metadata.
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)


def metadata_host(url: str) -> str | None:
    """The host of ``url`` when it is, or resolves to, a link-local or cloud metadata address; else None."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host in METADATA_NAMES:
        return host
    try:
        # getaddrinfo also reads the spellings ip_address does not: 2852039166, 0xa9.0xfe.0xa9.0xfe
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP) if host else []
    except OSError:
        return None  # nothing to connect to: the job fails on its own
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in METADATA_NETWORKS):
            return host
    return None


def check_source(url: str, allowed_file_dir: str | None, allow_link_local: bool = False) -> str:
    """The URL or server path a job may read; ValueError naming what is wrong otherwise."""
    try:
        CameraConfig(id="job", url=url)  # what a camera's URL may be, a job's may be
    except ValidationError as exc:
        raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in STREAM_SCHEMES:
        if not allow_link_local and (host := metadata_host(url)) is not None:
            raise ValueError(
                f"{host} is a link-local or cloud metadata address; jobs may not read it "
                "(jobs.allow_link_local_urls is false)"
            )
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
