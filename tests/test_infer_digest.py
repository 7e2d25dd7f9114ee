"""Content digests of weights and calibration files, remembered across starts while the file is unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from streamsrv.infer import digest
from streamsrv.infer.digest import file_sha256


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files hashed from their bytes (instead of from the memo)."""
    seen: list[Path] = []
    real = digest.hash_file

    def counting(path: Path) -> str:
        seen.append(path)
        return real(path)

    monkeypatch.setattr(digest, "hash_file", counting)
    return seen


def test_an_unchanged_file_is_read_once(tmp_path: Path, reads: list[Path]) -> None:
    recording = tmp_path / "lobby.mp4"
    recording.write_bytes(b"frames" * 1000)
    memo = tmp_path / "memo"
    expected = hashlib.sha256(b"frames" * 1000).hexdigest()
    assert file_sha256(recording, memo) == file_sha256(recording, memo) == expected
    assert reads == [recording]
    assert file_sha256(recording) == expected and len(reads) == 2  # no memo: always read


def test_a_changed_file_is_hashed_again(tmp_path: Path, reads: list[Path]) -> None:
    recording, memo = tmp_path / "lobby.mp4", tmp_path / "memo"
    recording.write_bytes(b"before")
    assert file_sha256(recording, memo) == hashlib.sha256(b"before").hexdigest()
    stat = recording.stat()
    recording.write_bytes(b"after!")  # same size, rewritten in place
    os.utime(recording, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(recording, memo) == hashlib.sha256(b"after!").hexdigest()
    replacement = tmp_path / "new.mp4"
    replacement.write_bytes(b"third")
    replacement.replace(recording)  # swapped for another file
    assert file_sha256(recording, memo) == hashlib.sha256(b"third").hexdigest()
    assert len(reads) == 3


def test_a_damaged_memo_or_an_unwritable_one_only_costs_a_rehash(tmp_path: Path, reads: list[Path]) -> None:
    weights, memo = tmp_path / "w.pt", tmp_path / "memo"
    weights.write_bytes(b"weights")
    expected = hashlib.sha256(b"weights").hexdigest()
    file_sha256(weights, memo)
    (memo_file,) = memo.iterdir()
    memo_file.write_text("half a dig")
    assert file_sha256(weights, memo) == expected
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the memo folder would go")
    assert file_sha256(weights, blocked) == expected
    assert len(reads) == 3
