"""Config loading: precise errors naming file, line, field and value; env secrets; relative paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamsrv.config import load_config, parse_config
from streamsrv.config.outputs import OutputsConfig
from streamsrv.errors import ConfigError


def test_defaults_are_valid() -> None:
    cfg = parse_config("cameras: [{id: door, url: rtsp://10.0.0.2/s}]")
    assert cfg.cameras[0].detect_fps == 5.0
    assert cfg.inference.device == "auto"
    assert cfg.tracker.type == "bytetrack"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cameras: [{id: a, url: x.mp4, detect_fps: 0}]",
            "cfg.yaml:1: cameras[0].detect_fps = 0: Input should be greater than 0",
        ),
        ("cameras: [{id: a, url: x.mp4, colour: red}]", "cameras[0].colour = 'red': unknown field"),
        ("cameras: [{id: a, url: 'ftp://h/x'}]", "unsupported URL scheme 'ftp'"),
        ("cameras: [{id: 'a b', url: x.mp4}]", "cameras[0].id = 'a b'"),
        ("cameras: [{id: a, url: x.mp4}, {id: a, url: y.mp4}]", "duplicate camera id 'a'"),
        ("inference: {max_batch: many}", "inference.max_batch = 'many'"),
        ("tracker: {type: sort}", "tracker.type = 'sort'"),
        (
            "inference: {backend: onnxruntime, precision: int8, calibration: x.mp4}",
            "inference: Value error, precision int8 needs backend openvino, not onnxruntime",
        ),
        ("inference: {backend: openvino, precision: int8}", "precision int8 needs calibration"),
        ("modle: {path: x.pt}", "modle"),
        ("cameras: [{id: a}]", "cameras[0].url: Field required"),
        ("cameras: [a, b", "not valid YAML"),
        ("- just\n- a list", "top level must be a mapping"),
    ],
)
def test_bad_config_names_field_and_value(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("cfg.yaml")


def test_error_points_at_the_offending_line() -> None:
    text = "model:\n  path: m.pt\ncameras:\n  - id: a\n    url: a.mp4\n  - id: b\n    url: b.mp4\n    detect_fps: -2\n"
    with pytest.raises(ConfigError, match=r"^cfg.yaml:8: cameras\[1\].detect_fps = -2"):
        parse_config(text, "cfg.yaml")


def test_secrets_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASSWORD", "s3cret")
    monkeypatch.setenv("API_KEY", "tok-9f2e")
    cfg = parse_config("server: {api_key: '${API_KEY}'}\ncameras: [{id: a, url: 'rtsp://admin:${CAM_PASSWORD}@h/s'}]")
    assert cfg.cameras[0].url == "rtsp://admin:s3cret@h/s"
    assert cfg.server.api_key is not None and cfg.server.api_key.get_secret_value() == "tok-9f2e"
    assert "tok-9f2e" not in repr(cfg.server)


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.url: environment variable NOPE is not set"):
        parse_config("cameras: [{id: a, url: 'rtsp://u:${NOPE}@h/s'}]", "cfg.yaml")
    assert parse_config("server: {host: '${NOPE:-0.0.0.0}'}").server.host == "0.0.0.0"


LITERAL_SECRETS = [
    ("outputs: {webhooks: [{url: 'http://h/x', secret: 'k3y-literal'}]}", "outputs.webhooks[0].secret", "k3y-literal"),
    ("outputs: {webhooks: [{url: 'http://u:pw-literal@h/x'}]}", "outputs.webhooks[0].url", "pw-literal"),
    ("outputs: {mqtt: {url: 'mqtt://h', password: 'mq-literal'}}", "outputs.mqtt.password", "mq-literal"),
    ("outputs: {mqtt: {url: 'mqtts://u:mq-pw@h'}}", "outputs.mqtt.url", "mq-pw"),
    # a default is the secret written in the file after all
    ("outputs: {mqtt: {url: 'mqtt://h', password: '${UNSET_PW:-dflt-pw}'}}", "outputs.mqtt.password", "dflt-pw"),
    ("outputs: {webhooks: [{url: 'http://h/x', secret: 'pre-${HOOK_KEY}'}]}", "outputs.webhooks[0].secret", "pre-"),
]


@pytest.mark.parametrize(("text", "field", "secret"), LITERAL_SECRETS)
def test_output_secrets_written_in_the_file_are_refused(
    monkeypatch: pytest.MonkeyPatch, text: str, field: str, secret: str
) -> None:
    monkeypatch.setenv("HOOK_KEY", "from-env")
    monkeypatch.delenv("UNSET_PW", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    message = str(err.value)
    assert message.startswith(f"cfg.yaml:1: {field}: a ") and "must not be written in the config file" in message
    assert "${NAME}" in message and secret not in message, "the error says what to do and never shows the secret"


def test_output_secrets_from_the_environment_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_KEY", "hk-1")
    monkeypatch.setenv("HOOK_PW", "hp-2")
    monkeypatch.setenv("MQ_PW", "mp-3")
    monkeypatch.delenv("UNSET_PW", raising=False)
    cfg = parse_config(
        "outputs:\n"
        "  webhooks: [{url: 'https://u:${HOOK_PW}@h/x', secret: '${HOOK_KEY}'}, {url: '${HOOK_URL:-http://h/y}'}]\n"
        "  mqtt: {url: 'mqtt://u:${MQ_PW}@h', password: '${UNSET_PW:-}'}\n"
        # camera URLs may hold a literal password: the API stores cameras it adds that way
        "cameras: [{id: a, url: 'rtsp://admin:cam-pw@h/s'}]\n"
    )
    hook = cfg.outputs.webhooks[0]
    assert hook.url == "https://u:hp-2@h/x" and hook.secret is not None and hook.secret.get_secret_value() == "hk-1"
    assert cfg.outputs.mqtt is not None and cfg.outputs.mqtt.url == "mqtt://u:mp-3@h"
    assert cfg.outputs.mqtt.password is None, "an empty default is no password"
    assert cfg.cameras[0].url == "rtsp://admin:cam-pw@h/s"
    # Values that do not come from a file (the API, code) are not the file's secrets
    assert OutputsConfig.model_validate({"mqtt": {"url": "mqtt://h", "password": "p"}}).mqtt is not None


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.pt").write_bytes(b"x")
    cfg_file = tmp_path / "streamsrv.yaml"
    cfg_file.write_text(
        "model: {path: models/m.pt}\ncameras: [{id: a, url: clips/a.mp4}, {id: b, url: 'rtsp://h/s'}]\n"
        "inference: {backend: openvino, precision: int8, calibration: clips/lobby.mp4}"
    )
    cfg = load_config(cfg_file)
    assert cfg.model.path == str(tmp_path / "models" / "m.pt")
    assert cfg.inference.calibration == str(tmp_path / "clips" / "lobby.mp4")
    assert cfg.cameras[0].url == str(tmp_path / "clips" / "a.mp4")
    assert cfg.cameras[1].url == "rtsp://h/s"


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_cli_validate_config_exits_2_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - id: a\n    url: a.mp4\n    detect_fps: fast\n")
    proc = subprocess.run(
        [sys.executable, "-m", "streamsrv.cli", "validate-config", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert f"{bad}:4: cameras[0].detect_fps = 'fast'" in proc.stderr


OLD_NAMES_CONFIG = """\
preview: {trail_seconds: 4}
cameras:
  - id: door
    url: rtsp://10.0.0.2/s
    rules:
      grace_seconds: 5
      stationary_seconds: 20
      stationary_grace_seconds: 90
      relink_seconds: 1
      zones:
        - {name: lobby, polygon: [[0, 0], [9, 0], [0, 9]], min_seconds: 0.5, loiter_seconds: 30}
      lines:
        - {name: gate, points: [[0, 5], [9, 5]], cooldown_seconds: 4}
"""


def test_deprecated_seconds_names_still_load_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="streamsrv.config.base"):
        cfg = parse_config(OLD_NAMES_CONFIG)

    rules = cfg.cameras[0].rules
    assert not isinstance(rules, str) and rules is not None
    assert (cfg.preview.trail_s, rules.grace_s, rules.stationary_s, rules.stationary_grace_s, rules.relink_s) == (
        4,
        5,
        20,
        90,
        1,
    )
    assert (rules.zones[0].min_s, rules.zones[0].loiter_s, rules.lines[0].cooldown_s) == (0.5, 30, 4)
    warned = caplog.text
    for old, new in [
        ("preview.trail_seconds", "trail_s"),
        ("rules.grace_seconds", "grace_s"),
        ("rules.relink_seconds", "relink_s"),
        ("zones[].min_seconds", "min_s"),
        ("zones[].loiter_seconds", "loiter_s"),
        ("lines[].cooldown_seconds", "cooldown_s"),
    ]:
        assert f"{old} is deprecated, use {new}" in warned


def test_old_and_new_name_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="trail_seconds is the deprecated name of trail_s; give only trail_s"):
        parse_config("preview: {trail_seconds: 4, trail_s: 3}", "cfg.yaml")


def test_new_names_load_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="streamsrv.config.base"):
        cfg = parse_config("preview: {trail_s: 3}")
    assert cfg.preview.trail_s == 3 and not caplog.records
