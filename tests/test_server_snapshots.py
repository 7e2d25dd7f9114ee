"""Event snapshots are drawn on the frame the event came from, or not at all; and what the server keeps of each
processed frame (its result and its rules' output) agrees. A stand-in supervisor holds the frames, so no process
or model runs."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

from streamsrv.config.models import AppConfig
from streamsrv.runtime.caches import event_cache_sizes
from streamsrv.runtime.server import StreamServer
from streamsrv.types import FrameRef, FrameResult, Tracks

Frame = tuple[FrameRef, npt.NDArray[np.uint8]]
W, H = 640, 360


class FrameStore:
    """The supervisor as the server sees it, with frames held in a dict as a ring would (the last few)."""

    def __init__(self) -> None:
        self.frames: dict[int, Frame] = {}
        self.newest: Frame | None = None
        self.callbacks: list[Callable[[FrameResult], None]] = []

    def subscribe(self, callback: Callable[[FrameResult], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: None

    def on_state_change(self, callback: object) -> None:
        pass

    def on_clip(self, callback: object) -> None:
        pass

    def on_decoder_exit(self, callback: object) -> None:
        pass

    def frame_at(self, camera_id: str, seq: int) -> Frame | None:
        return self.frames.get(seq)

    def latest_frame(self, camera_id: str) -> Frame | None:
        return self.newest


def ref(seq: int) -> FrameRef:
    return FrameRef("door", seq, seq, W, H, 1.7e9 + seq, 100.0 + seq, 0.0)


def person_at(seq: int, x: float) -> FrameResult:
    tracks = Tracks(
        xyxy=np.array([[x - 20, 200, x + 20, 300]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([0], np.int32),
        track_id=np.array([1], np.int32),
        confirmed=np.array([True]),
    )
    return FrameResult(ref(seq), tracks, {0: "person"})


def serve() -> tuple[StreamServer, FrameStore]:
    cfg = AppConfig.model_validate(
        {
            "cameras": [
                {
                    "id": "door",
                    "url": "rtsp://127.0.0.1:1/none",
                    "rules": {"zones": [{"name": "left", "polygon": [[0, 0], [320, 0], [320, 360], [0, 360]]}]},
                }
            ]
        }
    )
    store = FrameStore()
    return StreamServer(cfg, supervisor=store), store  # type: ignore[arg-type]


def enter(server: StreamServer, store: FrameStore, keep: Callable[[int], bool]) -> str:
    """A person walks into the zone over frames 1..3 (distinct pictures); frames ``keep`` rejects have left the ring
    by the time their result arrives. Returns the id of the zone.enter event."""
    for seq in (1, 2, 3):
        pixels = np.full((H, W, 3), 40 * seq, np.uint8)
        store.newest = (ref(seq), pixels)
        if keep(seq):
            store.frames[seq] = (ref(seq), pixels)
        for callback in store.callbacks:
            callback(person_at(seq, 100.0))
    (record,) = server.bus.history(type="zone.enter")
    return record.event.id


def test_a_snapshot_shows_the_frame_its_event_came_from() -> None:
    server, store = serve()
    event_id = enter(server, store, keep=lambda seq: True)
    jpeg = server.snapshots.get(event_id)
    assert jpeg is not None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert abs(int(image[50, 600].mean()) - 80) < 8, "the background of frame 2 (the enter commits on it)"
    assert server.snapshots.stats().missed == 0


def test_an_event_whose_frame_left_the_ring_gets_no_snapshot_and_is_counted() -> None:
    server, store = serve()
    event_id = enter(server, store, keep=lambda seq: seq != 2)  # a newer frame (3) is there, never used
    assert server.snapshots.get(event_id) is None
    assert server.snapshots.stats().missed == 1


def test_the_latest_result_and_rules_output_are_kept_together() -> None:
    server, store = serve()
    before = server.latest("door")
    assert before.result is None and before.output.occupancy == {"left": {}}
    enter(server, store, keep=lambda seq: True)
    latest = server.latest("door")
    assert latest.result is not None and latest.result.frame.seq == 3
    assert latest.output.occupancy == {"left": {"person": 1}} == server.occupancy("door")
    assert [e.type for e in latest.output.events] == []  # the enter came with frame 2


def test_the_server_reports_how_full_its_caches_are() -> None:
    server, store = serve()
    empty = {c.cache: c for c in event_cache_sizes(server.cfg.events, server.snapshots, server.bus)}
    assert (empty["snapshots"].items, empty["snapshots"].bytes, empty["events"].items) == (0, 0, 0)
    assert empty["snapshots"].max_bytes == 64 * 2**20 and empty["events"].max_items == 1000

    event_id = enter(server, store, keep=lambda seq: True)

    sizes = {c.cache: c for c in event_cache_sizes(server.cfg.events, server.snapshots, server.bus)}
    jpeg = server.snapshots.get(event_id)
    assert jpeg is not None and (sizes["snapshots"].items, sizes["snapshots"].bytes) == (1, len(jpeg))
    assert sizes["events"].items == len(server.bus.history(limit=1000)) >= 1
