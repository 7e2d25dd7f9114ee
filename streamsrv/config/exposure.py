"""Who can reach the server: a server bound beyond loopback needs an API key, or an explicit opt-out.

Loopback (127.0.0.0/8, ::1, ``localhost``) is reachable from this machine only, so it may stay open as it
always was. Any other address (``0.0.0.0``, ``::``, a LAN address, a host name that resolves beyond loopback)
lets the network in: without ``server.api_key`` anyone there could add cameras, read events and snapshots.

Example:
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    >>> check_exposure(ServerConfig(host="127.0.0.1")) is None
    True
"""

from __future__ import annotations

import ipaddress
import socket

from streamsrv.config.models import ServerConfig
from streamsrv.errors import ConfigError

KEY_HINT = (
    "set an API key: put `server.api_key: ${STREAMSRV_API_KEY}` in the config and the key in the environment "
    "variable STREAMSRV_API_KEY (e.g. `export STREAMSRV_API_KEY=$(openssl rand -hex 24)`)"
)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` reaches this machine only: a loopback address, or a name resolving only to them."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if not host:  # uvicorn binds every interface for an empty host
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def check_exposure(server: ServerConfig) -> str | None:
    """None when serving as configured is safe; a warning to log when it is open to the network by choice
    (``server.allow_unauthenticated``). Raises ConfigError, saying how to set a key, when it is open by accident."""
    if server.api_key is not None or is_loopback(server.host):
        return None
    if server.allow_unauthenticated:
        return (
            f"serving on {server.host} without an API key (server.allow_unauthenticated is true): anyone who can "
            "reach this address can change cameras and read events"
        )
    raise ConfigError(
        f"refusing to serve on {server.host} without an API key: every API call would be open to the network. "
        f"Either {KEY_HINT}; or bind to 127.0.0.1; or, behind a proxy that authenticates, set "
        "`server.allow_unauthenticated: true`"
    )
