"""Content hashes of weights and calibration sources, remembered on disk across starts.

Exports are keyed by what a file holds, not by its name. A calibration recording can be gigabytes, and
reading it all at every start would delay it by seconds to minutes, so a digest is remembered under
the file's (path, size, mtime, inode): a file rewritten in place gets a new mtime and is hashed again.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "weights.pt").write_bytes(b"abc")
    3
    >>> file_sha256(folder / "weights.pt", memo_dir=folder / "memo")[:12]
    'ba7816bf8f01'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def file_sha256(path: Path, memo_dir: Path | None = None) -> str:
    """The sha256 of ``path``'s bytes; with ``memo_dir``, read from there when the file is unchanged."""
    if memo_dir is None:
        return hash_file(path)
    memo = memo_dir / file_stamp(path)
    with contextlib.suppress(OSError):
        remembered = memo.read_text().strip()
        if _SHA256_HEX.fullmatch(remembered):
            return remembered
    digest = hash_file(path)
    with contextlib.suppress(OSError):  # a read-only cache only costs the next start a rehash
        memo_dir.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(digest)
        tmp.replace(memo)  # atomic: a concurrent reader sees the whole digest or none
    return digest


def file_stamp(path: Path) -> str:
    """A name for this version of the file: it changes when the file is replaced, resized or rewritten."""
    st = path.stat()
    identity = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
