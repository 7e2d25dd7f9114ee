"""The runtime's parts stay behind ``StreamServer``: nothing outside ``streamsrv/runtime/`` reaches the supervisor."""

from __future__ import annotations

import ast
from pathlib import Path

import streamsrv

PACKAGE = Path(streamsrv.__file__).parent
RUNTIME = PACKAGE / "runtime"


def supervisor_uses(path: Path) -> list[int]:
    """Lines of ``path`` that read an attribute named ``supervisor``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "supervisor"]


def test_nothing_outside_the_runtime_touches_the_supervisor() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(RUNTIME)]
    assert len(modules) > 20, "the package was not found where expected"
    offenders = {str(p.relative_to(PACKAGE)): lines for p in modules if (lines := supervisor_uses(p))}
    assert not offenders, f"use StreamServer's methods instead of .supervisor: {offenders}"


def test_the_check_sees_an_attribute_access(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(server):\n    return server.supervisor.camera_ids()\n")
    assert supervisor_uses(sample) == [2]
