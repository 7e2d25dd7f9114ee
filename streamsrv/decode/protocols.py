"""What FFmpeg may open for a source: the input it is given and the protocols it may use, by the URL's scheme.

FFmpeg follows what a source says: an HLS playlist names its segments (``file:///etc/...`` or any other
protocol), and a path such as ``concat:a|b`` or ``subfile,,start,0,end,0,,:x`` is itself a protocol that reads
other files. A camera URL could then reach what its scheme never meant to. Each source is therefore opened with
FFmpeg's ``protocol_whitelist`` for its scheme (nested opens, such as a playlist's segments, inherit it), and a local
path is handed over as ``file:PATH``, so no part of it is read as a protocol name.

Example:
    >>> ffmpeg_input("rtsps://cam.local/live")
    ('rtsps://cam.local/live', 'rtsp,rtp,srtp,udp,tcp,tls,rtsps')
    >>> ffmpeg_input("https://cam.local/index.m3u8")
    ('https://cam.local/index.m3u8', 'http,https,tcp,tls,crypto,httpproxy')
    >>> ffmpeg_input("file:///srv/clips/concat:a.mp4|b.mp4")
    ('file:/srv/clips/concat:a.mp4|b.mp4', 'file')
    >>> ffmpeg_input("/dev/video0")
    ('/dev/video0', 'file')
"""

from __future__ import annotations

from urllib.parse import urlsplit

_RTSP = "rtsp,rtp,srtp,udp,tcp"
_HTTP = "http,https,tcp,tls,crypto,httpproxy"  # crypto: AES-128 HLS segments; httpproxy: $http_proxy
PROTOCOLS_BY_SCHEME = {
    "rtsp": _RTSP,
    "rtsps": f"{_RTSP},tls,rtsps",
    "http": _HTTP,
    "https": _HTTP,
    "file": "file",
}


def ffmpeg_input(url: str) -> tuple[str, str]:
    """``(what to hand av.open, its protocol_whitelist)`` for a camera URL, a local path or a V4L2 device."""
    if url.startswith("/dev/video"):
        return url, "file"  # a device read by the v4l2 demuxer itself, through no protocol
    if "://" not in url or url.startswith("file://"):
        return "file:" + url.removeprefix("file://"), "file"
    return url, PROTOCOLS_BY_SCHEME[urlsplit(url).scheme.lower()]
