import os
import stat
from pathlib import Path

from streamsrv.fileio import atomic_write_text


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    atomic_write_text(path, "one: 1\n")
    atomic_write_text(path, "two: 2\n")

    assert path.read_text() == "two: 2\n"
    assert os.listdir(tmp_path) == ["a.yaml"]


def test_atomic_write_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("one: 1\n")
    path.chmod(0o600)

    atomic_write_text(path, "two: 2\n")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "two: 2\n"
