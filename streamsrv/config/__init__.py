"""Configuration: pydantic models and the YAML loader."""

from streamsrv.config.loader import load_config, parse_config
from streamsrv.config.models import (
    AppConfig,
    CameraConfig,
    InferenceConfig,
    ModelConfig,
    ServerConfig,
    TrackerConfig,
    redact_url,
)

__all__ = [
    "AppConfig",
    "CameraConfig",
    "InferenceConfig",
    "ModelConfig",
    "ServerConfig",
    "TrackerConfig",
    "load_config",
    "parse_config",
    "redact_url",
]
