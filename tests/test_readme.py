"""The README's config reference is generated from the models; it must not go stale."""

from __future__ import annotations

from pathlib import Path

from streamsrv.config.reference import BEGIN, END, embed

README = Path(__file__).resolve().parent.parent / "README.md"


def test_config_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert embed(text) == text, "README config reference is stale: run python -m streamsrv.config.reference README.md"
