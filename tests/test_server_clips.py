"""The server's side of event clips, with a stand-in supervisor: an event of a recording camera goes out with its
clip ``recording`` and a record request (the event's frame pts, the camera's pre/post) goes to its decoder; the
decoder's report comes back as ``clip.ready`` in the camera's sequence; a camera whose decoder is not running, or
whose disk is full, still delivers its events, with the clip failed and counted."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from streamsrv.config.models import AppConfig
from streamsrv.ipc.messages import ClipStatus, RecordRequest
from streamsrv.runtime import server as server_module
from streamsrv.runtime.server import StreamServer
from streamsrv.types import FrameResult
from tests.test_server_snapshots import FrameStore, person_at


class Recorders(FrameStore):
    """A supervisor stand-in that takes record requests (or refuses them, like a camera with no decoder)."""

    def __init__(self, running: bool = True) -> None:
        super().__init__()
        self.running = running
        self.incarnation = 1  # of the camera's decoder
        self.requests: list[tuple[str, RecordRequest]] = []
        self.clip_callbacks: list[Callable[[ClipStatus], None]] = []
        self.exit_callbacks: list[Callable[[str, int], None]] = []

    def request_clip(self, camera_id: str, req: RecordRequest) -> int | None:
        if not self.running:
            return None
        self.requests.append((camera_id, req))
        return self.incarnation

    def on_clip(self, callback: Callable[[ClipStatus], None]) -> None:
        self.clip_callbacks.append(callback)

    def on_decoder_exit(self, callback: Callable[[str, int], None]) -> None:
        self.exit_callbacks.append(callback)

    def decoder_exited(self) -> None:
        """The camera's decoder exits; its restart is the next incarnation."""
        for callback in self.exit_callbacks:
            callback("door", self.incarnation)
        self.incarnation += 1


def serve(
    tmp_path: object,
    running: bool = True,
    zone_extra: dict[str, object] | None = None,
    types: list[str] | None = None,
) -> tuple[StreamServer, Recorders]:
    zone = {"name": "left", "polygon": [[0, 0], [320, 0], [320, 360], [0, 360]], **(zone_extra or {})}
    cfg = AppConfig.model_validate(
        {
            "record": {"dir": str(tmp_path)},
            "cameras": [
                {
                    "id": "door",
                    "url": "rtsp://127.0.0.1:1/none",
                    "rules": {"zones": [zone]},
                    "record": {"enabled": True, "pre_s": 3, "post_s": 4, "types": types or ["zone.enter"]},
                }
            ],
        }
    )
    store = Recorders(running)
    return StreamServer(cfg, supervisor=store), store  # type: ignore[arg-type]


def at(seq: int) -> FrameResult:
    """Frame ``seq`` (wall time 1.7e9 + seq, pts 50 + seq) with a person in the zone."""
    result = person_at(seq, 100.0)
    return dataclasses.replace(result, frame=dataclasses.replace(result.frame, video_ts=50.0 + seq))


def walk_in(server: StreamServer, store: Recorders) -> None:
    for seq in (1, 2, 3):
        for callback in store.callbacks:
            callback(at(seq))


def test_an_event_asks_its_decoder_for_a_clip_and_clip_ready_follows(tmp_path: object) -> None:
    server, store = serve(tmp_path)
    walk_in(server, store)
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    assert entered.clip is not None and entered.clip.state == "recording"
    assert entered.clip.url == f"/api/events/{entered.id}/clip.mp4"
    [(camera_id, req)] = store.requests
    assert camera_id == "door" and req.event_id == entered.id
    assert (req.video_ts, req.pre_s, req.post_s) == (52.0, 3.0, 4.0)  # the pts of frame 2, which the enter commits on

    for callback in store.clip_callbacks:
        callback(ClipStatus("door", (entered.id,), "ready", path=str(tmp_path) + "/x.mp4", bytes=10, duration_s=8))
    (ready,) = [r.event for r in server.bus.history(type="clip.ready")]
    assert ready.event_id == entered.id and ready.clip is not None and ready.clip.state == "ready"
    assert (ready.run_id, ready.seq) == (entered.run_id, entered.seq + 1)
    assert server.clips.outcomes["ready"] == 1


def test_a_full_disk_or_a_stopped_decoder_fails_the_clip_but_delivers_the_event(tmp_path: object) -> None:
    server, store = serve(tmp_path, running=False)
    walk_in(server, store)
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    assert entered.clip is not None and entered.clip.state == "failed"
    assert server.clips.outcomes["failed"] == 1

    server, store = serve(tmp_path)
    walk_in(server, store)
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    for callback in store.clip_callbacks:
        callback(ClipStatus("door", (entered.id,), "skipped", error="OSError: No space left on device"))
    (ready,) = [r.event for r in server.bus.history(type="clip.ready")]
    assert ready.clip is not None and ready.clip.state == "failed" and "No space" in (ready.clip.error or "")
    assert server.clips.outcomes["skipped"] == 1


def test_a_loitering_object_keeps_its_clip_open_while_it_stays(tmp_path: object) -> None:
    server, store = serve(tmp_path, zone_extra={"loiter_s": 2}, types=["loiter.start", "loiter.end"])
    for seq in range(1, 9):  # a frame a second (wall and pts), the person standing in the zone
        for callback in store.callbacks:
            callback(at(seq))
    (started,) = [r.event for r in server.bus.history(type="loiter.start")]
    first, *extensions = store.requests
    assert first[1].event_id == started.id and not first[1].extend_only
    assert extensions and all(r.event_id == started.id and r.extend_only for _, r in extensions)
    assert [r.video_ts for _, r in extensions] == [first[1].video_ts + k for k in range(1, len(extensions) + 1)]


def test_a_clip_whose_decoder_never_reports_is_given_up_with_clip_ready_failed(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_REPORT_GRACE_S", -3600.0)  # every report is overdue at once
    server, store = serve(tmp_path)
    walk_in(server, store)  # the enter (frame 2) asks for a clip; frame 3's result finds it overdue
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    (given_up,) = [r.event for r in server.bus.history(type="clip.ready")]
    assert given_up.event_id == entered.id and given_up.clip is not None and given_up.clip.state == "failed"
    assert "no word" in (given_up.clip.error or "") and server.clips.outcomes["failed"] == 1
    assert server.clips.overdue() == [], "given up once"


def test_a_decoder_that_exits_fails_the_clips_it_was_recording_at_once(tmp_path: object) -> None:
    server, store = serve(tmp_path)
    walk_in(server, store)
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    assert entered.clip is not None and entered.clip.state == "recording"

    store.decoder_exited()  # incarnation 1 exits: its clip is lost, long before max_clip_s + 60 s
    (lost,) = [r.event for r in server.bus.history(type="clip.ready")]
    assert lost.event_id == entered.id and lost.clip is not None and lost.clip.state == "failed"
    assert "decoder stopped while recording" in (lost.clip.error or "") and server.clips.outcomes["failed"] == 1
    assert (lost.run_id, lost.seq) == (entered.run_id, entered.seq + 1), "in the camera's sequence"
    assert server.clips.overdue() == [] and server.clips.state(entered.id) == lost.clip

    # The restarted decoder (incarnation 2) records the next clip; incarnation 1's exit, heard again, is not its end
    later = server.request_clip(entered.model_copy(update={"id": "f" * 32}), 60.0)
    assert later.clip is not None and later.clip.state == "recording"
    for callback in store.exit_callbacks:
        callback("door", 1)
    assert len(server.bus.history(type="clip.ready")) == 1 and server.clips.state(later.id) == later.clip


def test_a_clip_asked_of_a_decoder_that_already_exited_fails_with_its_event(tmp_path: object) -> None:
    server, store = serve(tmp_path)
    for callback in store.exit_callbacks:  # the decoder exits after taking the request, before the book hears of it
        callback("door", store.incarnation)
    walk_in(server, store)
    (entered,) = [r.event for r in server.bus.history(type="zone.enter")]
    assert entered.clip is not None and entered.clip.state == "failed" and server.clips.outcomes["failed"] == 1
