"""The base of every config model, and the deprecated-name rule shared by them.

Example:
    >>> rename_deprecated({"wait_seconds": 2.0}, {"wait_seconds": "wait_s"}, "retry")
    {'wait_s': 2.0}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, assignments are validated, numbers are finite."""

    # NaN and infinity pass bounds such as ``gt=0`` and would be stored (a camera whose reconnect delay is
    # infinite never reconnects); JSON bodies can carry them as NaN, Infinity or 1e999.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def rename_deprecated(data: Any, renamed: Mapping[str, str], where: str) -> Any:
    """``data`` with each old key in ``renamed`` moved to its new name, logging a deprecation for each.

    Config files written before a field was renamed keep loading; giving both names is an error. Call it from a
    model's ``model_validator(mode="before")``; ``where`` names the section in the warning.
    """
    if not isinstance(data, Mapping) or not any(old in data for old in renamed):
        return data
    out = dict(data)
    for old, new in renamed.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"{old} is the deprecated name of {new}; give only {new}")
        log.warning("config: %s.%s is deprecated, use %s (same value and unit)", where, old, new)
        out[new] = out.pop(old)
    return out
