"""A server bound beyond loopback needs an API key or an explicit opt-out; loopback stays open as before.

The CLI checks before it builds the app, so a refused server never starts a process or loads the model: the tests
run ``streamsrv serve`` in-process with an app factory that fails the test if it is reached.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from streamsrv import cli
from streamsrv.config import ServerConfig, load_config
from streamsrv.config.exposure import check_exposure, is_loopback
from streamsrv.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "10.0.0.5", "fe80::1", "no-such-host.invalid"])
def test_addresses_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_no_key_beyond_loopback_is_refused_with_how_to_set_one(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_exposure(ServerConfig(host=host))
    assert "server.api_key: ${STREAMSRV_API_KEY}" in str(err.value)
    assert "allow_unauthenticated" in str(err.value)


def test_a_key_or_loopback_needs_nothing_more() -> None:
    assert check_exposure(ServerConfig(host="0.0.0.0", api_key="k")) is None  # type: ignore[arg-type]
    assert check_exposure(ServerConfig(host="127.0.0.1")) is None


def test_opting_out_gives_a_warning() -> None:
    warning = check_exposure(ServerConfig(host="0.0.0.0", allow_unauthenticated=True))
    assert warning is not None and "without an API key" in warning


def test_an_empty_key_is_no_key() -> None:
    assert ServerConfig(api_key="").api_key is None  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        check_exposure(ServerConfig(host="0.0.0.0", api_key=""))  # type: ignore[arg-type]


class _Reached(Exception):
    """The app factory was called: the server got past the exposure check."""


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``streamsrv serve ARGS`` in-process, stopped where it would build the app (raising ``_Reached``)."""
    import setproctitle

    import streamsrv.api.app

    def reached(*args: Any, **kwargs: Any) -> None:
        raise _Reached

    monkeypatch.setattr(streamsrv.api.app, "create_app", reached)
    monkeypatch.setattr(cli, "setup_logging", lambda *args: None)  # it would replace pytest's log capture
    monkeypatch.setattr(setproctitle, "setproctitle", lambda title: None)
    return lambda *args: cli.main(["serve", *args])


def test_cli_refuses_a_network_address_without_a_key_before_building_anything(
    serve: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert serve("--host", "0.0.0.0", "--port", "0") == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0" in err and "server.api_key: ${STREAMSRV_API_KEY}" in err


def test_cli_serves_the_network_without_a_key_when_told_to_and_warns(
    serve: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "open.yaml"
    config.write_text("server: {allow_unauthenticated: true}\n")
    with caplog.at_level(logging.WARNING, logger="streamsrv"), pytest.raises(_Reached):
        serve("--config", str(config), "--host", "0.0.0.0")
    assert any("without an API key" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_cli_on_loopback_without_a_key_starts_as_before(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="streamsrv"), pytest.raises(_Reached):
        serve("--host", "127.0.0.1")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_compose_demo_binds_every_interface_in_its_container_and_may(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose.yml runs `serve --config /config/compose.yaml --host 0.0.0.0` and publishes on 127.0.0.1.
    monkeypatch.delenv("STREAMSRV_API_KEY", raising=False)
    cfg = load_config(REPO / "examples" / "compose.yaml")
    cfg.server.host = "0.0.0.0"
    assert check_exposure(cfg.server) is not None  # a warning, not a refusal
    monkeypatch.setenv("STREAMSRV_API_KEY", "demo-key")
    cfg = load_config(REPO / "examples" / "compose.yaml")
    assert cfg.server.api_key is not None and cfg.server.api_key.get_secret_value() == "demo-key"
