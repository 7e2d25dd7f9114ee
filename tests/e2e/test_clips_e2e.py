"""Event clips end to end: ``streamsrv serve`` with the real model on the looping 360p clip, a tripwire making
line.cross events, and recording on. Each crossing goes out with its clip ``recording``; its ``clip.ready`` follows
on the bus; the clip, fetched from the API (whole and by range), decodes end to end and covers pre_s + post_s. With
``record.max_bytes`` smaller than any clip, clips are skipped and counted and the events still arrive.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import pytest

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
API_KEY = "clip-key"
PRE_S, POST_S = 2.0, 2.0


def config(clip: Path, model: Path, record: str) -> str:
    return (
        model_section(model)
        + f"server: {{api_key: {API_KEY}}}\n"
        + f"record: {record}\n"
        + "cameras:\n"
        + f"  - {{id: concourse, url: '{clip}', loop: true, detect_fps: 5,\n"
        + f"      record: {{enabled: true, pre_s: {PRE_S}, post_s: {POST_S}, types: [line.cross]}},\n"
        + "      rules: {lines: [{name: midline, points: [[0, 0.55], [1, 0.55]], units: norm}]}}\n"
    )


def events(app: AppServer, type: str) -> list[dict[str, Any]]:
    with app.client(API_KEY) as http:
        return http.get("/api/events", params={"type": type, "limit": 100}).json()["events"]  # type: ignore[no-any-return]


def test_a_line_crossing_gets_a_clip_that_the_api_serves(
    app_factory: AppServers, clip_360p: Path, person_model: Path
) -> None:
    app = app_factory(config(clip_360p, person_model, "{dir: clips}"))
    wait_for(lambda: bool(events(app, "clip.ready")), 240, "a clip.ready event", app)
    ready = events(app, "clip.ready")[0]
    crossing = next(e for e in events(app, "line.cross") if e["id"] == ready["event_id"])
    assert crossing["clip"]["state"] == "recording" and crossing["clip"]["url"] == ready["clip"]["url"]
    assert ready["clip"]["state"] == "ready", ready
    with app.client(API_KEY) as http:
        whole = http.get(ready["clip"]["url"])
        part = http.get(ready["clip"]["url"], headers={"Range": "bytes=0-1023"})
        metrics = http.get("/metrics").text
    assert whole.status_code == 200 and part.status_code == 206 and part.content == whole.content[:1024]
    with av.open(io.BytesIO(whole.content)) as container:
        frames = list(container.decode(video=0))
    times = [f.time for f in frames]
    # pre_s + post_s at least; more when later crossings shared the clip (tests/test_clips.py checks the bounds)
    assert frames[0].key_frame and PRE_S + POST_S - 0.2 <= max(times) - min(times) <= 60
    assert 'streamsrv_clips_total{outcome="ready"}' in metrics


def test_clips_over_max_bytes_are_skipped_and_counted_and_events_still_arrive(
    app_factory: AppServers, clip_360p: Path, person_model: Path
) -> None:
    app = app_factory(config(clip_360p, person_model, "{dir: clips, max_bytes: 1000}"))
    wait_for(lambda: bool(events(app, "clip.ready")), 240, "a clip.ready event", app)
    ready = events(app, "clip.ready")[0]
    assert ready["clip"]["state"] == "failed" and "max_bytes" in ready["clip"]["error"]
    assert any(e["id"] == ready["event_id"] for e in events(app, "line.cross"))
    with app.client(API_KEY) as http:
        assert http.get(ready["clip"]["url"]).status_code == 404
        metrics = http.get("/metrics").text
    skipped = [ln for ln in metrics.splitlines() if ln.startswith('streamsrv_clips_total{outcome="skipped"}')]
    assert skipped and float(skipped[0].split()[-1]) >= 1
    assert not list((Path(app.config).parent / "clips").rglob("*.mp4"))
