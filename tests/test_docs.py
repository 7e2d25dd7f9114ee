"""The documentation: the README stays an overview, the docs site builds with no broken link, and the generated
config reference in docs/configuration.md does not go stale."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from streamsrv.config.reference import BEGIN, END, embed

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
README_MAX_BYTES = 15_000

_FENCED = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_config_reference_is_current() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert BEGIN in text and END in text
    assert embed(text) == text, "stale config reference: run python -m streamsrv.config.reference docs/configuration.md"


def test_readme_is_an_overview_whose_links_resolve() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; keep it an overview and move details to docs/"
    targets = _LINK.findall(_FENCED.sub("", README.read_text(encoding="utf-8")))
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "README.md links to no docs page"
    missing = [t for t in relative if not (REPO / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_docs_site_builds_strictly_without_warnings(tmp_path: Path) -> None:
    # strict mode, with mkdocs.yml's link validation, turns a broken link or anchor into a failed build
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = build.stdout + build.stderr
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert build.returncode == 0, output
    assert not warnings, "\n".join(warnings)
    assert (tmp_path / "site" / "index.html").exists()


def test_architecture_module_map_names_every_module_and_only_real_ones() -> None:
    # The map in docs/architecture.md is the newcomer's guide to the package: a module added, moved or removed
    # without it is a map that lies. Packages are named as `pkg/`; runtime/ and jobs/ list each module.
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text[text.index("## Module map") : text.index("Beside the package:")]
    named = set(re.findall(r"`([a-z_]+(?:/|\.py))`", section))
    package = REPO / "streamsrv"
    expected = {f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    expected |= {p.name for p in package.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}}
    for listed in ("runtime", "jobs"):
        expected |= {p.name for p in (package / listed).glob("*.py") if p.name != "__init__.py"}
    missing = sorted(expected - named)
    assert not missing, f"docs/architecture.md's module map does not name {missing}"
    real = expected | {f"{p.name}/" for p in package.iterdir() if p.is_dir()}
    real |= {p.name for p in package.rglob("*.py")}
    stale = sorted(n for n in named if n not in real)
    assert not stale, f"docs/architecture.md's module map names {stale}, which do not exist"
