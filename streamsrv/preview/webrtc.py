"""WebRTC preview with aiortc: the browser posts an SDP offer, the server answers with a VP8 video track that sends
the camera's annotated frames. They are encoded once per camera for all viewers (``streamsrv.preview.vp8``);
aiortc only packetizes them, so the codec is fixed to VP8, which every browser offers.

Signalling is one request (no trickle ICE): the answer carries every server candidate. Host candidates are the
machine's addresses, or ``preview.host_addresses`` when set; ``preview.ice_servers`` adds STUN (server-reflexive)
and TURN (relayed) candidates for viewers behind NAT. Nothing is used that is not configured (aiortc would
otherwise fall back to a public STUN server).

A peer is closed and forgotten when its connection fails or closes (the browser left: DTLS close or ICE consent
lost), when it does not connect within ``CONNECT_TIMEOUT_S``, on ``DELETE``, and when the app stops.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import aioice.ice
import av
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamsrv.config.preview import PreviewConfig
from streamsrv.errors import StreamsrvError
from streamsrv.preview.hub import Layers, PreviewHub, Viewer
from streamsrv.preview.vp8 import TIME_BASE

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 20.0
# VP8 and its retransmission format: the feed's encoder makes VP8, and lost packets can be re-sent.
_VP8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/VP8", "video/rtx")]


class BadOffer(StreamsrvError):
    """The SDP offer cannot be used (not SDP, or no video to receive)."""


class PeerLimitReached(StreamsrvError):
    """``preview.max_webrtc_peers`` viewers are connected already."""


class PreviewTrack(MediaStreamTrack):
    """A video track that sends a camera's VP8 frames, encoded by its feed, as they come."""

    kind = "video"

    def __init__(self, viewer: Viewer) -> None:
        super().__init__()
        self.viewer = viewer

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.viewer.next_frame()
        if frame is None or frame.vp8 is None:  # the camera was removed or the app is stopping
            self.stop()
            raise MediaStreamError
        packet = av.Packet(frame.vp8.data)
        packet.pts, packet.time_base = frame.vp8.pts, TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self.viewer.close()


@dataclass
class _Peer:
    camera_id: str
    pc: RTCPeerConnection
    track: PreviewTrack
    expiry: asyncio.TimerHandle | None = None


class WebRtcPeers:
    """The WebRTC viewers of one app; use from its event loop."""

    def __init__(self, hub: PreviewHub, cfg: PreviewConfig) -> None:
        self.hub, self.cfg = hub, cfg
        self._peers: dict[str, _Peer] = {}
        self._closing: set[asyncio.Task[bool]] = set()
        self._ice_servers = [
            RTCIceServer(
                urls=s.urls,
                username=s.username,
                credential=s.credential.get_secret_value() if s.credential else None,
            )
            for s in cfg.ice_servers
        ]
        use_host_addresses([str(a) for a in cfg.host_addresses])

    def __len__(self) -> int:
        return len(self._peers)

    def camera_of(self, session_id: str) -> str | None:
        peer = self._peers.get(session_id)
        return peer.camera_id if peer is not None else None

    async def answer(
        self, camera_id: str, offer_sdp: str, layers: Layers = frozenset()
    ) -> tuple[str, RTCSessionDescription]:
        """Accept a browser's offer to receive a camera's preview (with optional ``layers``): ``(session_id,
        answer)``.

        Raises NotFoundError (no such camera), PeerLimitReached, BadOffer.
        """
        if "m=video" not in offer_sdp:
            raise BadOffer("the offer has no video section (m=video) to receive the preview on")
        if len(self._peers) >= self.cfg.max_webrtc_peers:
            raise PeerLimitReached(f"{self.cfg.max_webrtc_peers} WebRTC viewers are connected already")
        viewer = self.hub.watch(camera_id, "webrtc", layers)
        track = PreviewTrack(viewer)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice_servers))
        session_id = secrets.token_hex(8)
        peer = _Peer(camera_id, pc, track)
        self._peers[session_id] = peer
        try:
            # The transceiver exists before the offer is applied, so that the offer is matched against VP8 only.
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(_VP8)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            except OperationError:
                raise BadOffer("the offer does not accept VP8 video") from None
            except Exception as exc:
                # aiortc reports malformed SDP as ValueError, KeyError, IndexError, AssertionError, RuntimeError...
                log.debug("camera %s: offer refused", camera_id, exc_info=True)
                raise BadOffer(f"the offer is not usable SDP ({type(exc).__name__}: {exc})") from None
        except BaseException:
            await self.close(session_id)
            raise
        pc.on("connectionstatechange", self._on_state(session_id))
        peer.expiry = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._expire, session_id)
        log.info("camera %s: WebRTC viewer %s (%d connected)", camera_id, session_id, len(self._peers))
        return session_id, pc.localDescription

    async def close(self, session_id: str) -> bool:
        """Close a peer; False if there is no such session (any more)."""
        peer = self._peers.pop(session_id, None)
        if peer is None:
            return False
        if peer.expiry is not None:
            peer.expiry.cancel()
        peer.track.stop()
        await peer.pc.close()
        peer.pc.remove_all_listeners()
        log.info("camera %s: WebRTC viewer %s left (%d connected)", peer.camera_id, session_id, len(self._peers))
        return True

    async def close_all(self) -> None:
        for session_id in list(self._peers):
            await self.close(session_id)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _on_state(self, session_id: str) -> Callable[[], None]:
        def changed() -> None:
            peer = self._peers.get(session_id)
            if peer is None:
                return
            state = peer.pc.connectionState
            if state == "connected" and peer.expiry is not None:
                peer.expiry.cancel()
                peer.expiry = None
            elif state in ("failed", "closed"):
                self._close_soon(session_id)

        return changed

    def _expire(self, session_id: str) -> None:
        peer = self._peers.get(session_id)
        if peer is not None and peer.pc.connectionState != "connected":
            log.info("camera %s: WebRTC viewer %s never connected; closing it", peer.camera_id, session_id)
            self._close_soon(session_id)

    def _close_soon(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.close(session_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


_SYSTEM_HOST_ADDRESSES = aioice.ice.get_host_addresses


def use_host_addresses(addresses: list[str]) -> None:
    """Offer only these addresses as host candidates (all of the machine's when empty).

    aioice has no setting for this; it looks its address list up through a module-level function, which is
    replaced here, for the whole process (a process serves one configuration).
    """
    if not addresses:
        aioice.ice.get_host_addresses = _SYSTEM_HOST_ADDRESSES
        return

    def configured(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = configured
