"""Persistence of the camera registry in the YAML config file (no server needed: the store is plain file I/O)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import yaml

from streamsrv.config import CameraConfig, load_config
from streamsrv.config.rules import LineConfig, RulesConfig, load_rules
from streamsrv.runtime.registry import ConfigFileStore, absolute_url

CONFIG = """\
# Hand-written: this comment is only kept in the .bak copy.
server:
  api_key: ${STREAMSRV_TEST_KEY}
cameras:
  - id: door
    url: rtsp://admin:${STREAMSRV_TEST_PW}@10.0.0.5/stream   # password from the environment
    detect_fps: 2
    rules: zones/door.yaml
  - id: lobby
    url: clips/lobby.mp4
    loop: true
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMSRV_TEST_KEY", "key-123")
    monkeypatch.setenv("STREAMSRV_TEST_PW", "pw-456")
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "door.yaml").write_text("lines: [{name: gate, points: [[0, 10], [100, 10]]}]\n")
    path = tmp_path / "streamsrv.yaml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    return path


def test_unchanged_values_stay_as_written(config: Path) -> None:
    cameras = load_config(config).cameras
    store = ConfigFileStore(config)

    cameras[1] = cameras[1].model_copy(update={"detect_fps": 3.0})
    store.save_cameras(cameras)

    written = yaml.safe_load(config.read_text())
    door, lobby = written["cameras"]
    assert door == {
        "id": "door",
        "url": "rtsp://admin:${STREAMSRV_TEST_PW}@10.0.0.5/stream",
        "detect_fps": 2,
        "rules": "zones/door.yaml",
    }
    assert lobby == {"id": "lobby", "url": "clips/lobby.mp4", "loop": True, "detect_fps": 3.0}
    assert written["server"] == {"api_key": "${STREAMSRV_TEST_KEY}"}
    assert "pw-456" not in config.read_text() and "key-123" not in config.read_text()
    assert load_config(config).cameras == cameras


def test_changed_and_new_cameras_are_written_as_given(config: Path, tmp_path: Path) -> None:
    cameras = load_config(config).cameras
    store = ConfigFileStore(config)
    moved = cameras[0].model_copy(update={"url": "rtsp://admin:new-pw@10.0.0.6/stream"})
    added = CameraConfig(id="yard", url=str(tmp_path / "yard.mp4"), rules=RulesConfig(lines=[_line()]))

    store.save_cameras([moved, added])

    reloaded = load_config(config).cameras
    assert [c.id for c in reloaded] == ["door", "yard"]
    assert reloaded[0].url == "rtsp://admin:new-pw@10.0.0.6/stream"
    assert reloaded[1] == added
    written = yaml.safe_load(config.read_text())["cameras"][1]
    assert written["rules"] == {"lines": [{"name": "gate", "points": [[0.0, 10.0], [100.0, 10.0]]}]}


def test_first_rewrite_keeps_the_hand_written_file_as_backup(config: Path) -> None:
    store = ConfigFileStore(config)

    store.save_cameras(load_config(config).cameras)

    assert store.backup_path.read_text() == CONFIG
    assert config.read_text().startswith(ConfigFileStore.HEADER)
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert sorted(p.name for p in config.parent.iterdir()) == ["streamsrv.yaml", "streamsrv.yaml.bak", "zones"]


def test_registry_wins_over_a_hand_edit_of_cameras_but_other_sections_are_kept(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cameras = load_config(config).cameras
    store = ConfigFileStore(config)
    store.save_cameras(cameras)
    edited = yaml.safe_load(config.read_text())
    edited["cameras"][0]["detect_fps"] = 9
    edited["inference"] = {"max_batch": 2}
    config.write_text(yaml.safe_dump(edited, sort_keys=False))

    with caplog.at_level(logging.WARNING, logger="streamsrv.runtime.registry"):
        store.save_cameras(cameras)

    written = yaml.safe_load(config.read_text())
    assert written["cameras"][0]["detect_fps"] == 2
    assert written["inference"] == {"max_batch": 2}
    assert yaml.safe_load(store.backup_path.read_text())["cameras"][0]["detect_fps"] == 9
    assert "changed on disk" in caplog.text


def test_a_symlinked_config_is_written_through_the_link(config: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.yaml"
    link.symlink_to(config)

    ConfigFileStore(link).save_cameras(load_config(config).cameras[:1])

    assert link.is_symlink()
    assert [c.id for c in load_config(link).cameras] == ["door"]


def test_rules_files_are_written_relative_to_the_config(config: Path) -> None:
    store = ConfigFileStore(config)
    rules = RulesConfig(lines=[_line(), _line("exit")])

    store.save_rules(rules, "zones/door.yaml")

    assert load_rules(config.parent / "zones" / "door.yaml") == rules


def test_relative_paths_are_resolved_against_the_config_directory() -> None:
    assert absolute_url("clips/a.mp4", Path("/srv/cfg")) == "/srv/cfg/clips/a.mp4"
    assert absolute_url("file://clips/a.mp4", Path("/srv/cfg")) == "/srv/cfg/clips/a.mp4"
    assert absolute_url("/data/a.mp4", Path("/srv/cfg")) == "/data/a.mp4"
    assert absolute_url("rtsp://cam/1", Path("/srv/cfg")) == "rtsp://cam/1"


def _line(name: str = "gate") -> LineConfig:
    return LineConfig(name=name, points=[(0, 10), (100, 10)])
