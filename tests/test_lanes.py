"""Background lanes: uploaded frames share the live inference loop, losslessly and at lower priority."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from streamsrv.analyze import Analyzer
from streamsrv.config import parse_config
from streamsrv.config.models import AppConfig
from streamsrv.errors import LaneClosed
from streamsrv.runtime.lanes import Lane
from streamsrv.runtime.supervisor import Supervisor
from streamsrv.types import FrameResult
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg(person_model: Path, clip_360p: Path) -> AppConfig:
    return parse_config(f"""
model: {{path: "{person_model}", labels: {{Normal: person, Fall: person}}}}
inference: {{threads: 1, max_batch: 4, background_max_batch: 2}}
capacity: {{degrade: false}}  # the bare pipeline: no governor lowering detect fps under overload
cameras:
  - {{id: live, url: "{clip_360p}", detect_fps: 5, loop: true}}
""")


@pytest.fixture(scope="module")
def supervisor(cfg: AppConfig) -> Iterator[Supervisor]:
    sup = Supervisor(cfg, instance=f"test{os.getpid()}lanes")
    sup.start()
    wait_for(lambda: sup.inference.model_loaded, 180, "the model to load")
    yield sup
    sup.stop()
    assert not list(Path("/dev/shm").glob(f"streamsrv-test{os.getpid()}lanes-*"))


def _frames(clip: Path, n: int) -> list[np.ndarray]:
    with av.open(str(clip)) as c:
        return [f.to_ndarray(format="bgr24") for f, _ in zip(c.decode(video=0), range(n), strict=False)]


class Collector:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.lock = threading.Lock()

    def __call__(self, r: FrameResult) -> None:
        with self.lock:
            self.results.append(r)

    def count(self) -> int:
        with self.lock:
            return len(self.results)


def test_lane_is_lossless_in_order_and_matches_analyze(supervisor: Supervisor, cfg: AppConfig, clip_360p: Path) -> None:
    frames = _frames(clip_360p, 12)
    got = Collector()
    live_before = supervisor.camera_stats("live").frames_processed
    lane = supervisor.open_lane(got, track=True, detect_fps=25)
    for i, frame in enumerate(frames):
        lane.submit(frame, video_ts=i / 25, frame_index=i)
    wait_for(lambda: got.count() == len(frames), 120, "every lane frame to be inferred")
    lane.close()
    assert [r.frame.frame_index for r in got.results] == list(range(len(frames)))
    assert all(r.camera_id == lane.id for r in got.results)

    offline = list(Analyzer(cfg).run(str(clip_360p), detect_fps=None, motion_gating=False))[: len(frames)]
    for ours, theirs in zip(got.results, offline, strict=True):
        assert len(ours.tracks) == len(theirs.tracks)
        np.testing.assert_allclose(ours.tracks.xyxy, theirs.tracks.xyxy, atol=1.0)
        assert ours.tracks.track_id.tolist() == theirs.tracks.track_id.tolist()
    # the live camera kept going meanwhile
    assert supervisor.camera_stats("live").frames_processed > live_before


def test_untracked_lane_returns_plain_detections(supervisor: Supervisor, clip_360p: Path) -> None:
    got = Collector()
    lane = supervisor.open_lane(got, track=False)
    lane.submit(_frames(clip_360p, 1)[0])
    wait_for(lambda: got.count() == 1, 60, "the image to be inferred")
    lane.close()
    tracks = got.results[0].tracks
    assert len(tracks) >= 5
    assert (tracks.track_id == -1).all() and not tracks.confirmed.any()
    assert got.results[0].labels == {0: "person"}


def _feed_until_it_fails(lane: Lane, frame: np.ndarray, fed: threading.Event, ended_by: list[BaseException]) -> None:
    try:
        while True:
            lane.submit(frame, timeout_s=30)
            fed.set()
    except BaseException as exc:  # the test reports whatever ended the feeder
        ended_by.append(exc)


def test_closing_a_lane_while_it_is_fed_stops_the_feeder_cleanly(supervisor: Supervisor, clip_360p: Path) -> None:
    """A job deleted mid-run closes its lane from a request thread while the job's feeder writes into it."""
    frame = _frames(clip_360p, 1)[0]
    for attempt in range(30):
        lane = supervisor.open_lane(Collector(), track=False, max_width=640, max_height=360)
        fed = threading.Event()
        ended_by: list[BaseException] = []
        feeder = threading.Thread(target=_feed_until_it_fails, args=(lane, frame, fed, ended_by))
        feeder.start()
        assert fed.wait(30)
        time.sleep(attempt * 0.0007)  # close at different points of submit's write and its wait for room
        lane.close()  # must not raise, whatever the feeder is doing
        feeder.join(30)
        assert not feeder.is_alive()
        assert len(ended_by) == 1 and isinstance(ended_by[0], LaneClosed), ended_by
