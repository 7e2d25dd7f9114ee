"""Preview settings: the annotated live view (MJPEG, WebRTC) and the ICE servers browsers use to reach it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, IPvAnyAddress, SecretStr, field_validator, model_validator

from streamsrv.config.base import StrictModel, rename_deprecated


class IceServerConfig(StrictModel):
    """A STUN or TURN server for WebRTC, in the browser's ``RTCIceServer`` shape."""

    urls: list[str] = Field(
        min_length=1, description="stun:host:port, turn:host:port?transport=udp|tcp or turns:host:port."
    )
    username: str | None = Field(None, description="TURN user name.")
    credential: SecretStr | None = Field(None, description="TURN password; use ${ENV_VAR}.")

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not re.match(r"^(stun|turn|turns):[^\s]+$", url):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
        return urls

    @model_validator(mode="after")
    def _turn_needs_credentials(self) -> IceServerConfig:
        if any(u.startswith("turn") for u in self.urls) and (not self.username or self.credential is None):
            raise ValueError("a TURN server needs username and credential")
        return self


class PreviewConfig(StrictModel):
    """Live annotated preview (MJPEG, WebRTC, snapshot.jpg); work is done only for cameras someone watches."""

    fps: float = Field(
        10.0, gt=0, le=60, description="Annotated frames per second at most; never more than a camera's processed fps."
    )
    max_width: int = Field(960, ge=64, le=3840, description="Preview frames are downscaled to fit this width.")
    max_height: int = Field(540, ge=64, le=2160, description="Preview frames are downscaled to fit this height.")
    jpeg_quality: int = Field(
        75,
        ge=10,
        le=100,
        description="Quality of every JPEG the server draws: MJPEG frames, snapshot.jpg, event snapshots and "
        "annotated /api/detect images.",
    )
    trail_s: float = Field(2.0, ge=0, le=30, description="Length of the track trails drawn; 0 turns them off.")
    ice_servers: list[IceServerConfig] = Field(
        default_factory=list,
        description="STUN/TURN servers for WebRTC (the server uses the first of each kind, the browser all). "
        "None are needed on localhost and a LAN; viewers behind symmetric NAT need TURN.",
    )
    host_addresses: list[IPvAnyAddress] = Field(
        default_factory=list,
        description="IP addresses the server offers as WebRTC host candidates; all of the machine's when empty.",
    )
    webrtc_bitrate_kbps: int = Field(
        1500, ge=100, le=50_000, description="VP8 bitrate of a camera's WebRTC stream (encoded once for all viewers)."
    )
    max_webrtc_peers: int = Field(
        16, ge=0, le=1000, description="Concurrent WebRTC viewers at most; 0 turns WebRTC off (the page uses MJPEG)."
    )
    niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="How much the preview threads (drawing, JPEG and VP8 encoding) yield the CPU, added to the "
        "server's niceness: on a CPU the model shares, watching then slows the preview, not inference.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_deprecated_names(cls, data: Any) -> Any:
        return rename_deprecated(data, {"trail_seconds": "trail_s"}, "preview")
