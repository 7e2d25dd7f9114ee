"""Logging set-up: plain or JSON lines, with camera credentials redacted from every message."""

from __future__ import annotations

import json
import logging
import sys
import time

from streamsrv.config.models import redact_url


class RedactingFilter(logging.Filter):
    """Replaces ``user:password@`` in any log message (and its arguments) with ``user:***@``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "process": record.processName,
        }
        if record.exc_info:
            entry["exc"] = redact_url(self.formatException(record.exc_info))
        return json.dumps(entry)


def setup_logging(level: str = "info", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
