"""WebRTC preview against the real app (uvicorn in a thread, so the test can look inside it) with a file camera
(the 360p clip) and the real person model, and aiortc as the client: video arrives; bad offers are refused
naming the field; the peer limit holds; and 20 viewers coming and going (half closing with DELETE, half simply
hanging up) leave no peer connection, track, encoder, task, thread or preview loop behind."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.ice
import httpx
import pytest
import uvicorn
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from fastapi.testclient import TestClient

from streamsrv.api.app import create_app
from streamsrv.config.models import AppConfig
from streamsrv.preview.webrtc import PreviewTrack, use_host_addresses
from tests.support.processes import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

CAMERA = "cam"
MAX_PEERS = 3


@dataclass
class Live:
    url: str
    loop: asyncio.AbstractEventLoop
    app: Any

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/api/preview/stats").json()
        return stats

    def server_tasks(self) -> set[asyncio.Task[Any]]:
        async def tasks() -> set[asyncio.Task[Any]]:
            return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

        return asyncio.run_coroutine_threadsafe(tasks(), self.loop).result(10)


@pytest.fixture(scope="module")
def live(clip_360p: Path, person_model: Path) -> Iterator[Live]:
    cfg = AppConfig.model_validate(
        {
            "model": {"path": str(person_model), "labels": {"Normal": "person", "Fall": "person"}},
            "inference": {"threads": 1, "device": "cpu"},
            "capacity": {"degrade": False},  # the pipeline as it is: no governor lowering detect fps
            # aioice never offers 127.0.0.1 on its own; on loopback nothing else is needed (no STUN, no TURN).
            "preview": {"host_addresses": ["127.0.0.1"], "max_webrtc_peers": MAX_PEERS},
            "cameras": [{"id": CAMERA, "url": str(clip_360p), "loop": True, "detect_fps": 5}],
        }
    )
    app = create_app(cfg)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), name="test-uvicorn")
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, 60, "uvicorn to start")
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 120, "the model to load")
        yield Live(url, loop, app)
    finally:
        server.should_exit = True
        thread.join(60)
        loop.close()
        use_host_addresses([])


async def view(url: str, frames: int, hang_up: bool) -> tuple[dict[str, Any], list[Any]]:
    """One viewer: offer, answer, ``frames`` video frames, then DELETE (or just close, as a browser tab would)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    track_arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    pc.on("track", lambda track: track_arrived.set_result(track))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post(
                f"/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": pc.localDescription.sdp}
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            track = await asyncio.wait_for(track_arrived, 30)
            received = [await asyncio.wait_for(track.recv(), 30) for _ in range(frames)]
            if not hang_up:
                closed = await http.delete(f"/api/cameras/{CAMERA}/webrtc/{answer['session_id']}")
                assert closed.status_code == 204
    finally:
        await pc.close()
    return answer, received


async def offer_sdp() -> str:
    """A real browser-like offer to receive video (from aiortc), for tests that break it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


def count(kind: type) -> int:
    gc.collect()
    return sum(isinstance(o, kind) for o in gc.get_objects())


def test_video_plays_over_loopback_without_stun(live: Live) -> None:
    answer, frames = asyncio.run(view(live.url, frames=5, hang_up=False))
    assert answer["type"] == "answer" and len(answer["session_id"]) == 16
    candidates = [line for line in answer["sdp"].splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c and " typ host" in c for c in candidates)
    assert all((f.width, f.height) == (640, 360) for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and pts[-1] > pts[0], "timestamps advance"
    wait_for(lambda: live.stats()["webrtc_peers"] == 0, 20, "the DELETEd peer to go")


def test_viewers_share_one_vp8_encoding_and_no_jpeg_is_made(live: Live) -> None:
    async def three_viewers() -> dict[str, Any]:
        pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(3)]
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            tracks = []
            for pc in pcs:
                pc.addTransceiver("video", direction="recvonly")
                arrived: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                pc.on("track", arrived.set_result)
                await pc.setLocalDescription(await pc.createOffer())
                offer = {"type": "offer", "sdp": pc.localDescription.sdp}
                response = await http.post(f"/api/cameras/{CAMERA}/webrtc", json=offer)
                assert "VP8/90000" in response.json()["sdp"] and "H264" not in response.json()["sdp"]
                await pc.setRemoteDescription(RTCSessionDescription(sdp=response.json()["sdp"], type="answer"))
                tracks.append(await asyncio.wait_for(arrived, 30))
            for track in tracks:
                for _ in range(5):
                    frame = await asyncio.wait_for(track.recv(), 30)
                    assert (frame.width, frame.height) == (640, 360)
            stats: dict[str, Any] = (await http.get("/api/preview/stats")).json()
        for pc in pcs:
            await pc.close()
        return stats

    stats = asyncio.run(three_viewers())
    cam = stats["cameras"][CAMERA]
    assert stats["webrtc_peers"] == 3 and cam["viewers"] == {"webrtc": 3}
    assert cam["jpeg_encodes"] == 0, "nobody watches MJPEG, so nothing is JPEG-encoded"
    assert 5 <= cam["vp8_encodes"] <= cam["frames"], "one VP8 encoding per frame for all three viewers"
    wait_for(lambda: live.stats()["webrtc_peers"] == 0, 60, "the server to notice the clients hung up")


def test_twenty_viewers_come_and_go_and_leave_nothing_behind(live: Live) -> None:
    wait_for(lambda: live.stats()["webrtc_peers"] == 0, 60, "earlier peers to go")
    tasks_before = len(live.server_tasks())
    for i in range(20):
        asyncio.run(view(live.url, frames=1, hang_up=i % 2 == 1))
    # Hung-up peers are noticed when DTLS closes (or, at worst, when ICE consent expires).
    wait_for(lambda: live.stats()["webrtc_peers"] == 0, 90, "every peer to be closed")
    idle = {"feeds": 0, "viewers": 0, "cameras": {}, "webrtc_peers": 0, "buffered_frames": 0, "buffered_bytes": 0}
    wait_for(lambda: live.stats() == idle, 20, "idle hub")
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("streamsrv-preview")],
        20,
        "preview threads to end",
    )
    wait_for(lambda: len(live.server_tasks()) <= tasks_before, 30, "server tasks back to where they were")
    for kind in (RTCPeerConnection, PreviewTrack, Vp8Encoder, H264Encoder):
        assert count(kind) == 0, f"{kind.__name__} objects leaked"


def test_bad_offers_unknown_cameras_and_the_peer_limit(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        garbage = http.post(f"/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": "hello"})
        assert garbage.status_code == 400 and garbage.json()["detail"].startswith("sdp:")
        wrong_type = http.post(f"/api/cameras/{CAMERA}/webrtc", json={"type": "answer", "sdp": "v=0"})
        assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == ["body", "type"]
        empty = http.post(f"/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": ""})
        assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body", "sdp"]
        assert http.post("/api/cameras/nope/webrtc", json={"type": "offer", "sdp": "m=video"}).status_code == 404
        assert http.delete(f"/api/cameras/{CAMERA}/webrtc/0123456789abcdef").status_code == 404

        real = asyncio.run(offer_sdp()).split("\r\n")
        no_ice_credentials = "\r\n".join(ln for ln in real if not ln.startswith("a=ice-ufrag"))
        broken = http.post(f"/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": no_ice_credentials})
        assert broken.status_code == 400 and broken.json()["detail"].startswith("sdp: the offer is not usable SDP")
        vp8 = {ln.split(":")[1].split()[0] for ln in real if ln.startswith("a=rtpmap:") and "VP8/90000" in ln}
        no_vp8 = "\r\n".join(ln for ln in real if not any(f":{pt} " in ln or ln.endswith(f":{pt}") for pt in vp8))
        h264_only = http.post(f"/api/cameras/{CAMERA}/webrtc", json={"type": "offer", "sdp": no_vp8})
        assert h264_only.status_code == 400 and "VP8" in h264_only.json()["detail"], h264_only.text
        assert live.stats()["webrtc_peers"] == 0, "refused offers leave no peer"

    async def over_the_limit() -> list[int]:
        pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(MAX_PEERS + 1)]
        codes, sessions = [], []
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
            for pc in pcs:
                pc.addTransceiver("video", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())
                offer = {"type": "offer", "sdp": pc.localDescription.sdp}
                response = await http.post(f"/api/cameras/{CAMERA}/webrtc", json=offer)
                codes.append(response.status_code)
                if response.status_code == 200:
                    sessions.append(response.json()["session_id"])
                else:
                    assert "max_webrtc_peers" in response.json()["detail"] or "viewers" in response.json()["detail"]
            for session_id in sessions:
                assert (await http.delete(f"/api/cameras/{CAMERA}/webrtc/{session_id}")).status_code == 204
        for pc in pcs:
            await pc.close()
        return codes

    assert asyncio.run(over_the_limit()) == [200] * MAX_PEERS + [503]
    assert live.stats()["webrtc_peers"] == 0


def test_host_addresses_and_ice_servers_are_configurable() -> None:
    use_host_addresses(["127.0.0.1", "::1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
    finally:
        use_host_addresses([])
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)

    turn = {"urls": ["turn:turn.example.net:3478?transport=udp"], "username": "u", "credential": "s3cret"}
    cfg = AppConfig.model_validate({"preview": {"ice_servers": [{"urls": ["stun:stun.example.net:3478"]}, turn]}})
    # No lifespan: this reads only the configuration, no camera or model is needed.
    settings = TestClient(create_app(cfg)).get("/api/preview/settings").json()
    assert settings["ice_servers"] == [
        {"urls": ["stun:stun.example.net:3478"], "username": None, "credential": None},
        turn,
    ]
    with pytest.raises(ValueError, match="needs username and credential"):
        AppConfig.model_validate({"preview": {"ice_servers": [{"urls": ["turn:x:3478"]}]}})
    with pytest.raises(ValueError, match="not a stun:, turn: or turns: URL"):
        AppConfig.model_validate({"preview": {"ice_servers": [{"urls": ["http://x"]}]}})
