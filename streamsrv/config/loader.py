"""Load and validate the main YAML config file; relative paths in it are relative to the file.

Errors name the file, line, field path and value (``yaml_source``); ``${NAME}`` references are expanded
from the environment.
"""

from __future__ import annotations

from pathlib import Path

from streamsrv.config.models import AppConfig
from streamsrv.config.yaml_source import validate_yaml
from streamsrv.errors import ConfigError


def parse_config(text: str, where: str = "<config>", base_dir: Path | None = None) -> AppConfig:
    """Validate config text. Raises ConfigError naming the source, line, field and value."""
    cfg = validate_yaml(text, where, AppConfig)
    cfg.base_dir = base_dir
    if base_dir is not None:
        _resolve_relative_paths(cfg, base_dir)
    return cfg


def _resolve_relative_paths(cfg: AppConfig, base_dir: Path) -> None:
    """Local paths in a config file are relative to the file, not to the working directory."""
    model = base_dir / cfg.model.path
    if not Path(cfg.model.path).is_absolute() and model.exists():
        cfg.model.path = str(model.resolve())
    calibration = cfg.inference.calibration
    if calibration is not None and not Path(calibration).is_absolute():
        cfg.inference.calibration = str((base_dir / calibration).resolve())
    if not Path(cfg.outputs.spool_dir).is_absolute():
        cfg.outputs.spool_dir = str((base_dir / cfg.outputs.spool_dir).resolve())
    for cam in cfg.cameras:
        url = cam.url.removeprefix("file://")
        if "://" not in url and not url.startswith("/"):
            cam.url = str((base_dir / url).resolve())


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    return parse_config(text, str(p), base_dir=p.resolve().parent)
