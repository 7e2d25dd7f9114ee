"""Which server files a source given through the API may read: only those inside ``server.allowed_file_dirs``.

The config file is written by the operator and may point anywhere. A camera added or changed over the API (or a
source probed there) is written by whoever holds the API key, who must not be able to make the server read its
own files (``file:///etc/shadow``, a key, another tenant's clips) and show them as video or errors. Paths are
resolved (``..`` and symlinks followed) before they are compared, so neither can lead out of an allowed directory.

Example:
    >>> local_path("rtsp://cam/1"), local_path("/dev/video0"), local_path("file:///srv/clips/a.mp4")
    (None, None, '/srv/clips/a.mp4')
    >>> check_file_access("rtsp://cam/1", allowed_dirs=[], base_dir=Path("/etc/streamsrv"))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

_DEVICE = re.compile(r"/dev/video\d+")


def local_path(url: str) -> str | None:
    """The server path a source URL reads; None for a network stream or a V4L2 capture device."""
    if _DEVICE.fullmatch(url):
        return None
    if "://" in url and not url.startswith("file://"):
        return None
    return url.removeprefix("file://")


def inside(path: Path, dirs: Sequence[Path]) -> bool:
    """Whether ``path``, resolved, lies in one of ``dirs`` (each resolved)."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(d.resolve()) for d in dirs)


def check_file_access(url: str, allowed_dirs: Sequence[str], base_dir: Path) -> None:
    """Raise ValueError (naming ``server.allowed_file_dirs``) when ``url`` reads a server file outside them.

    Relative paths, in the URL and in ``allowed_dirs``, are relative to ``base_dir`` (the config file's directory).
    """
    path = local_path(url)
    if path is None:
        return
    if not allowed_dirs:
        raise ValueError(
            "cameras added through the API may not read server files (server.allowed_file_dirs is empty); "
            "use a stream URL, or list the directory in server.allowed_file_dirs"
        )
    if not inside(base_dir / path, [base_dir / d for d in allowed_dirs]):
        raise ValueError(f"{path!r} is outside server.allowed_file_dirs ({', '.join(allowed_dirs)})")
