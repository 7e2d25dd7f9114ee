"""The spool outbox file: what a restart reads back after deliveries, dead letters, compaction and a torn write."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsrv.config.outputs import OutputsConfig
from streamsrv.errors import ConfigError
from streamsrv.events import InProcessBus
from streamsrv.outputs import OutputManager
from streamsrv.outputs.spool import SpoolOutbox


def keys_and_dead(path: Path) -> tuple[list[str], list[tuple[str, str | None]]]:
    box = SpoolOutbox(path)
    pending, dead = box.load()
    box.close()
    return [e.event_id for e in pending], [(e.event_id, e.error) for e in dead]


def test_reload_after_delivery_dead_letter_and_redrive(tmp_path: Path) -> None:
    path = tmp_path / "out" / "hook.jsonl"
    box = SpoolOutbox(path)
    entries = [box.add("door", f"e{i}", b'{"n": %d}' % i) for i in range(4)]
    box.delivered(entries[0])
    box.bury(entries[1], "HTTP 500")
    box.bury(entries[2], "HTTP 502")
    box.close()
    assert keys_and_dead(path) == (["e3"], [("e1", "HTTP 500"), ("e2", "HTTP 502")])

    box = SpoolOutbox(path)
    dead = box.load()[1]
    again = box.redrive(dead[0])
    box.close()
    assert again.body == b'{"n": 1}'
    assert keys_and_dead(path) == (["e3", "e1"], [("e2", "HTTP 502")])


def test_compaction_keeps_live_entries_in_order(tmp_path: Path) -> None:
    path = tmp_path / "hook.jsonl"
    box = SpoolOutbox(path, compact_min_lines=20)
    entries = [box.add("door", f"e{i}", b"{}") for i in range(30)]
    box.bury(entries[0], "gone")
    for entry in entries[1:25]:
        box.delivered(entry)
    box.close()
    assert len(path.read_text().splitlines()) < 20, "delivered entries were compacted away"
    assert keys_and_dead(path) == ([f"e{i}" for i in range(25, 30)], [("e0", "gone")])
    box = SpoolOutbox(path)
    assert int(box.add("door", "new", b"{}").key) > int(entries[-1].key), "keys keep increasing"
    box.close()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "hook.jsonl"
    box = SpoolOutbox(path)
    box.add("door", "e0", b"{}")
    box.close()
    with open(path, "a") as f:
        f.write('{"op":"add","key":"2","cam')  # a crash in the middle of an append
    assert keys_and_dead(path) == (["e0"], [])
    box = SpoolOutbox(path)
    box.add("door", "e1", b"{}")  # appended on a line of its own, not glued to the torn one
    box.close()
    assert keys_and_dead(path) == (["e0", "e1"], [])


def test_an_unusable_spool_dir_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    cfg = OutputsConfig.model_validate(
        {"webhooks": [{"url": "http://127.0.0.1:9/"}], "spool_dir": str(tmp_path / "file")}
    )
    with pytest.raises(ConfigError, match=r"outputs\.spool_dir: cannot open the outbox"):
        OutputManager(cfg, InProcessBus()).start()
