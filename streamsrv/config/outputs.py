"""Config of the outputs: webhooks and MQTT that every matching event is delivered to (docs/outputs.md).

Example:
    >>> cfg = OutputsConfig.model_validate({"webhooks": [{"url": "https://hooks.example/in", "types": ["line.cross"]}]})
    >>> cfg.webhooks[0].max_retries, cfg.webhooks[0].wants("door", "line.cross")
    (10, True)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from streamsrv.config.base import StrictModel
from streamsrv.config.yaml_source import refuse_literal


def url_password_from_env(url: Any, info: ValidationInfo) -> Any:
    """A field validator: a password in ``url`` must come from a ``${NAME}`` reference in a config file."""
    refuse_literal(url, info, url=True)
    return url


def secret_from_env(secret: Any, info: ValidationInfo) -> Any:
    """A field validator: a secret must come from a ``${NAME}`` reference in a config file; ``${NAME:-}`` with the
    variable unset is no secret (an unsigned webhook, no MQTT password), not an empty one."""
    refuse_literal(secret, info)
    return secret or None


class WebhookConfig(StrictModel):
    """One HTTP receiver: each matching event is POSTed as JSON, signed, retried, and kept in an outbox until
    delivered."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s):// URL the events are POSTed to; a password in it must be written as ${ENV_VAR}.",
    )
    types: list[str] | None = Field(None, description="Event types to deliver (e.g. line.cross); all when unset.")
    cameras: list[str] | None = Field(None, description="Camera ids to deliver events of; all when unset.")
    secret: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key the X-Streamsrv-Signature header is made with; in a config file only as "
        "${ENV_VAR} (a key written there is refused).",
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="Give up one POST after this.")
    max_retries: int = Field(
        10, ge=0, le=1000, description="Failed attempts after the first before the event goes to the dead letters."
    )
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="POSTs in flight at once, each for a different camera (one camera's events go one at a time, "
        "in order), so a camera whose receiver is slow holds up only itself.",
    )
    backoff_initial_s: float = Field(1.0, gt=0, le=3600, description="Delay before the first retry (doubles).")
    backoff_max_s: float = Field(300.0, gt=0, le=86400, description="Cap on the delay between retries.")

    _url_password_from_env = field_validator("url", mode="before")(url_password_from_env)
    _secret_from_env = field_validator("secret", mode="before")(secret_from_env)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if urlsplit(url).scheme.lower() not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError("must be an http:// or https:// URL")
        return url

    def wants(self, camera_id: str, event_type: str) -> bool:
        """Whether an event of this camera and type goes to this webhook."""
        return (self.cameras is None or camera_id in self.cameras) and (self.types is None or event_type in self.types)


class MqttConfig(StrictModel):
    """An MQTT broker that events (and camera state, retained) are published to."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="mqtt://host[:port] (1883) or mqtts://host[:port] (8883, TLS); a password in it must be "
        "written as ${ENV_VAR}.",
    )
    topic_prefix: str = Field(
        "streamsrv", min_length=1, max_length=200, description="Events go to <prefix>/<camera>/<type>."
    )
    qos: int = Field(1, ge=0, le=2, description="QoS of event messages.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(
        None, description="Broker password; in a config file only as ${ENV_VAR} (a password written there is refused)."
    )
    client_id: str | None = Field(None, max_length=128, description="MQTT client id; streamsrv-<host> when unset.")
    retain_state: bool = Field(True, description="Publish camera online/offline to <prefix>/<camera>/state, retained.")
    max_queued: int = Field(
        10_000, ge=1, description="Messages held while the broker is away; further ones are dropped and counted."
    )
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="Cap on the delay between reconnect attempts.")
    homeassistant_discovery: bool = Field(
        False,
        description="Announce each camera to Home Assistant (MQTT discovery) as a device with a connectivity "
        "sensor, a crossings sensor per tripwire and an occupancy sensor per zone, and publish their values.",
    )
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=200, description="Home Assistant's prefix.")
    counts_interval_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often line counts and zone occupancy are read and, when changed, published.",
    )

    _url_password_from_env = field_validator("url", mode="before")(url_password_from_env)
    _password_from_env = field_validator("password", mode="before")(secret_from_env)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if urlsplit(url).scheme.lower() not in ("mqtt", "mqtts") or not urlsplit(url).hostname:
            raise ValueError("must be an mqtt:// or mqtts:// URL")
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if any(ch in prefix for ch in "#+\0") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("must not contain # + or NUL, nor start or end with /")
        return prefix


class OutputsConfig(StrictModel):
    """Where events are delivered beyond the API: webhooks and MQTT."""

    webhooks: list[WebhookConfig] = Field(default_factory=list, description="HTTP receivers.")
    mqtt: MqttConfig | None = Field(None, description="An MQTT broker; none when unset.")
    spool_dir: str = Field(
        "./outbox",
        min_length=1,
        description="Where webhook outboxes are kept when events.redis_url is unset (one append-only file per "
        "webhook); relative to this config file's directory. One server per directory.",
    )
