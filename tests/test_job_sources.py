"""Where a job may read from: stream URLs but not link-local or cloud metadata addresses, files only inside
``jobs.allowed_file_dir``. (The same rules through ``POST /api/jobs`` are in tests/e2e/test_api_jobs.py.)"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from streamsrv.jobs.sources import check_source


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "rtsp://169.254.1.2/cam",
        "http://[fe80::1]/x.mp4",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
        "http://100.100.100.200/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata.google.internal./computeMetadata/v1/",
    ],
)
def test_link_local_and_metadata_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(ValueError, match=r"jobs\.allow_link_local_urls"):
        check_source(url, allowed_file_dir=None)
    assert check_source(url, allowed_file_dir=None, allow_link_local=True) == url


def test_a_name_that_resolves_to_a_metadata_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        address = "169.254.169.254" if host == "innocent.example" else "192.0.2.10"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(ValueError, match=r"innocent\.example\ is\ a\ link\-local\ or\ cloud\ metadata\ address"):
        check_source("https://innocent.example/clip.mp4", allowed_file_dir=None)
    assert check_source("https://cdn.example/clip.mp4", allowed_file_dir=None) == "https://cdn.example/clip.mp4"


@pytest.mark.parametrize("url", ["http://10.0.0.5/clip.mp4", "rtsp://127.0.0.1:8554/cam", "https://192.0.2.7/a.m3u8"])
def test_ordinary_addresses_pass(url: str) -> None:
    assert check_source(url, allowed_file_dir=None) == url


def test_files_only_inside_the_allowed_directory(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"")
    for url in ("file:///etc/passwd", "/etc/passwd", "clip.mp4"):
        with pytest.raises(ValueError, match=r"jobs\.allowed_file_dir\ is\ not\ set"):
            check_source(url, allowed_file_dir=None)
    assert check_source("clip.mp4", allowed_file_dir=str(tmp_path)) == str(tmp_path / "clip.mp4")
    for url in ("file:///etc/passwd", "../clip.mp4", "concat:clip.mp4|clip.mp4"):
        with pytest.raises(ValueError):
            check_source(url, allowed_file_dir=str(tmp_path))
