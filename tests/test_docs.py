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
