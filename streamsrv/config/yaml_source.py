"""YAML text to a validated model; every error names the source, line, field path and value.

``${NAME}`` in any string is replaced by the environment variable NAME (``${NAME:-default}`` gives a
default), so camera passwords and the API key need not live in the file. Used for the main config
(``loader``) and per-camera rules files (``rules``); imports no config model, so both can use it.

A string a reference made stays an ``EnvValue`` that remembers how it was written, and models are validated
with ``FILE_CONTEXT``, so a secret field can refuse a value written literally in the file (``refuse_literal``):
the model alone could not tell ``secret: ${HOOK_SECRET}`` from the secret itself.
"""

from __future__ import annotations

import os
import re
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from streamsrv.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# One reference and nothing else; a default would be the secret written in the file, so only an empty one.
_SOLE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}")
Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
FILE_CONTEXT = {"from_file": True}
SECRET_IN_FILE = "secret_in_file"  # the error type; its value is never shown


class EnvValue(str):
    """A string made by expanding ``${NAME}`` references; ``template`` is how the file wrote it."""

    template: str

    def __new__(cls, value: str, template: str) -> EnvValue:
        self = super().__new__(cls, value)
        self.template = template
        return self


def refuse_literal(value: Any, info: ValidationInfo, *, url: bool = False) -> None:
    """Raise if ``value`` (a secret, or with ``url`` the password in a URL) was written literally in a config file
    rather than as a sole ``${NAME}`` reference. Values not read from a file (API, code) are not checked.

    >>> class Info:
    ...     context = FILE_CONTEXT
    >>> refuse_literal(EnvValue("s3cret", "${HOOK_SECRET}"), Info())
    >>> refuse_literal(EnvValue("https://u:pw@h/x", "https://u:${PW}@h/x"), Info(), url=True)
    >>> refuse_literal("s3cret", Info())
    Traceback (most recent call last):
    pydantic_core._pydantic_core.PydanticCustomError: ...
    """
    if not isinstance(value, str) or not (info.context or {}).get("from_file"):
        return
    written = value.template if isinstance(value, EnvValue) else value
    if url:
        written = urlsplit(written).password or ""
        if not written:
            return
        what, hint = "a password", "write it in the URL as ${NAME} (e.g. https://user:${HOOK_PASSWORD}@host/path)"
    else:
        what, hint = "a secret", "write ${NAME} here"
    if _SOLE_REF.fullmatch(written) is None:
        raise PydanticCustomError(
            SECRET_IN_FILE,
            "{what} must not be written in the config file: put it in an environment variable and {hint}",
            {"what": what, "hint": hint},
        )


def _expand_env(value: Any, path: Path_, where: str) -> Any:
    if isinstance(value, str):
        if _ENV_REF.search(value) is None:
            return value

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: {_dotted(path)}: environment variable {name} is not set")

        return EnvValue(_ENV_REF.sub(sub, value), value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*path, k), where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*path, i), where) for i, v in enumerate(value)]
    return value


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _line_index(node: yaml.Node, path: Path_, index: dict[Path_, int]) -> None:
    """Map every field path in a composed YAML document to its 1-based line number."""
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[(*path, key.value)] = key.start_mark.line + 1
            _line_index(value, (*path, key.value), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), index)


def _nearest_line(index: dict[Path_, int], path: Path_) -> int | None:
    for n in range(len(path), -1, -1):
        if path[:n] in index:
            return index[path[:n]]
    return None


def format_validation_error(err: ValidationError, where: str, lines: dict[Path_, int] | None = None) -> str:
    """One line per problem: ``file:line: field.path = value: reason``."""
    out = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, str) or not p.startswith("function-"))
        line = _nearest_line(lines, loc) if lines else None
        prefix = f"{where}:{line}" if line else where
        value = e.get("input")
        hidden = e["type"] in ("missing", SECRET_IN_FILE) or isinstance(value, dict)
        shown = "" if hidden else f" = {str(value)!r}" if isinstance(value, EnvValue) else f" = {value!r}"
        reason = "unknown field (not allowed)" if e["type"] == "extra_forbidden" else e["msg"]
        out.append(f"{prefix}: {_dotted(loc)}{shown}: {reason}")
    return "\n".join(out)


def validate_yaml(text: str, where: str, model: type[M], what: str = "sections") -> M:
    """Parse YAML text into ``model``; ConfigError names the source, line, field and value.

    ``${NAME}`` references are expanded from the environment first; ``what`` names what the top-level
    mapping holds, for the error when it is not a mapping.
    """
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise ConfigError(f"{at}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of {what}, not {type(raw).__name__}")
    lines: dict[Path_, int] = {}
    if node is not None:
        _line_index(node, (), lines)
    raw = _expand_env(raw, (), where)
    try:
        return model.model_validate(raw, context=FILE_CONTEXT)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where, lines)) from None
