"""Render the config reference (every section and field, with type, default and description) as Markdown.

docs/configuration.md embeds this output between markers; a test keeps the two in sync.

    python -m streamsrv.config.reference                        # print it
    python -m streamsrv.config.reference docs/configuration.md  # rewrite the embedded reference
"""

from __future__ import annotations

import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamsrv.config.models import AppConfig

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} → {_type_name(args[1])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{field.default!r}`"


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def render_reference(model: type[BaseModel] = AppConfig, title: str = "") -> str:
    sections: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(m: type[BaseModel], path: str) -> None:
        if m in seen:
            return
        seen.add(m)
        doc = (m.__doc__ or "").strip().splitlines()[0] if m.__doc__ else ""
        lines = [
            f"#### `{path}`" if path else "#### top level",
            "",
            doc,
            "",
            "| field | type | default | description |",
            "|---|---|---|---|",
        ]
        nested: list[tuple[type[BaseModel], str]] = []
        for name, field in m.model_fields.items():
            if field.exclude:
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
            for sub in _nested_models(field.annotation):
                suffix = "[]" if typing.get_origin(field.annotation) is list else ""
                nested.append((sub, f"{path + '.' if path else ''}{name}{suffix}"))
        sections.append("\n".join(lines))
        for sub, sub_path in nested:
            walk(sub, sub_path)

    walk(model, title)
    return "\n\n".join(sections) + "\n"


def embed(document: str) -> str:
    """``document`` with the text between the reference markers replaced by the current reference."""
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render_reference()}{END}{tail}"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        path.write_text(embed(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(render_reference())
