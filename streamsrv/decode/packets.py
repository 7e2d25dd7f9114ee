"""The camera's encoded packets, kept for event clips: a ring reaching back a few seconds, and the clips being cut.

Packets are kept as the camera sent them (bytes and timestamps, no decoding), so a clip is a stream copy.
Times are the source's pts in seconds on the same clock as a frame's ``video_ts`` (a looping file's passes
continue it), which is what a record request names.

>>> ring = PacketRing(keep_s=2.0)
>>> for i in range(100):  # 25 fps, a keyframe every second
...     ring.add(EncodedPacket(b"x", pts_s=i / 25, dts_s=i / 25, duration_s=0.04, keyframe=i % 25 == 0))
>>> ring.packets[0].pts_s, len(ring.packets)  # back to the keyframe before 3.96 - 2
(1.0, 75)
>>> cutter = ClipCutter(ring)
>>> cutter.request("e1", video_ts=3.5, pre_s=1.0, post_s=1.0, max_clip_s=10)
[]
>>> cutter.request("e2", video_ts=3.8, pre_s=1.0, post_s=1.0, max_clip_s=10)  # joins e1's clip
[]
>>> done = [c for i in range(100, 130) if (c := cutter.add(
...     EncodedPacket(b"x", pts_s=i / 25, dts_s=i / 25, duration_s=0.04, keyframe=False)))]
>>> done[0].event_ids, done[0].packets[0].pts_s, round(done[0].packets[-1].pts_s, 2)
(['e1', 'e2'], 2.0, 4.8)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol


class PacketTap(Protocol):
    """Sees every packet a ``VideoSource`` demuxes, before decoding (the event-clip recorder keeps them)."""

    def on_open(self, stream: Any) -> None: ...

    def on_packet(self, packet: Any, pts_offset: float) -> None: ...


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One packet as demuxed: its bytes, timestamps in seconds and whether a decoder can start at it."""

    data: bytes
    pts_s: float
    dts_s: float
    duration_s: float
    keyframe: bool


class PacketRing:
    """The newest packets, reaching back to the keyframe at or before ``keep_s`` before the newest one."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.packets: deque[EncodedPacket] = deque()
        self._keys: deque[int] = deque()  # absolute indices of the keyframes held
        self._first = 0  # absolute index of packets[0]
        self.nbytes = 0

    def add(self, packet: EncodedPacket) -> None:
        if packet.keyframe:
            self._keys.append(self._first + len(self.packets))
        elif not self._keys:
            return  # nothing decodes before the first keyframe
        self.packets.append(packet)
        self.nbytes += len(packet.data)
        horizon = packet.dts_s - self.keep_s
        while len(self._keys) >= 2 and self.packets[self._keys[1] - self._first].dts_s <= horizon:
            for _ in range(self._keys[1] - self._first):
                self.nbytes -= len(self.packets.popleft().data)
            self._first = self._keys[1]
            self._keys.popleft()

    def since_keyframe_before(self, ts: float) -> list[EncodedPacket]:
        """The packets from the last keyframe at or before ``ts`` (the oldest held, if none is) to the newest."""
        start = self._keys[0] if self._keys else self._first
        for key in self._keys:
            if self.packets[key - self._first].pts_s > ts:
                break
            start = key
        return list(self.packets)[start - self._first :]

    def clear(self) -> None:
        self.packets.clear()
        self._keys.clear()
        self._first = 0
        self.nbytes = 0


@dataclass(slots=True)
class CutClip:
    """A clip being collected, then handed to the writer: its events and packets, first one a keyframe."""

    event_ids: list[str]
    packets: list[EncodedPacket]
    end_s: float  # collect packets through this time (in decoding order)
    limit_s: float  # never beyond this: start + max_clip_s

    @property
    def duration_s(self) -> float:
        if not self.packets:
            return 0.0
        return max(p.pts_s + p.duration_s for p in self.packets) - min(p.pts_s for p in self.packets)


class ClipCutter:
    """Turns record requests into clips: ``pre_s`` back from the ring, then packets through ``post_s`` after the
    last event it took. A request that comes while a clip is open joins it and extends it, up to ``max_clip_s``."""

    def __init__(self, ring: PacketRing) -> None:
        self.ring = ring
        self.open: CutClip | None = None

    def request(
        self, event_id: str, video_ts: float, pre_s: float, post_s: float, max_clip_s: float, extend_only: bool = False
    ) -> list[CutClip]:
        """Start or extend a clip; returns the clips this finished: the open one when the event is past its end,
        the new one when the ring already holds everything through its end (a late request). ``extend_only``
        moves the end of the open clip that holds ``event_id`` and does nothing else."""
        clip = self.open
        if extend_only:
            if clip is not None and event_id in clip.event_ids:
                clip.end_s = min(max(clip.end_s, video_ts + post_s), clip.limit_s)
            return []
        if clip is not None and video_ts - pre_s <= clip.end_s:
            clip.event_ids.append(event_id)
            clip.end_s = min(max(clip.end_s, video_ts + post_s), clip.limit_s)
            return []
        finished = [clip] if clip is not None else []
        packets = self.ring.since_keyframe_before(video_ts - pre_s)
        start = packets[0].pts_s if packets else video_ts - pre_s
        limit = start + max_clip_s
        end = min(video_ts + post_s, limit)
        new = CutClip([event_id], [p for p in packets if p.dts_s <= end], end, limit)
        if packets and packets[-1].dts_s > end:
            self.open = None
            return [*finished, new]
        self.open = new
        return finished

    def add(self, packet: EncodedPacket) -> CutClip | None:
        """Take a new packet into the open clip; returns the clip once a packet is past its end."""
        clip = self.open
        if clip is None:
            return None
        if packet.dts_s > clip.end_s:
            self.open = None
            return clip
        clip.packets.append(packet)
        return None

    def flush(self) -> CutClip | None:
        """The open clip as it is (the stream ended or the decoder stops)."""
        clip, self.open = self.open, None
        return clip
