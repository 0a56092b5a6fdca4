"""The documentation site builds in strict mode (a broken link, anchor or include fails), and the
README stays a short front page whose test command is CI's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import embedserve

from .examples import ROOT


def test_site_builds_in_strict_mode(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("quickstart", "library", "models", "server", "clients", "reference", "design"):
        assert (tmp_path / page / "index.html").is_file(), page


def test_readme_test_command_is_the_last_line_of_ci():
    ci_last = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_last in (ROOT / "README.md").read_text().splitlines()


def test_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_api_reference_documents_every_public_name():
    """docs/reference.md says everything importable from `embedserve` is on it; each name the
    package exports has its own `::: module.Name` entry there."""
    entries = {
        line.split()[1].rsplit(".", 1)[-1]
        for line in (ROOT / "docs" / "reference.md").read_text().splitlines()
        if line.startswith("::: ")
    }
    assert set(embedserve.__all__) - {"__version__"} - entries == set()


def test_every_variable_the_package_reads_is_documented():
    """The settings' variables come from their flags (EMBEDSERVE_ + the name, checked with the
    flag table); a variable the source names itself (the cache, the diagnostic ones, the API-key
    files) is one a user may set too, so some page must name it. Was missing:
    EMBEDSERVE_ORT_LOG_LEVEL."""
    import re

    source = "\n".join(p.read_text() for p in (ROOT / "python" / "embedserve").rglob("*.py"))
    # The settings module's docstring writes the pattern with a placeholder name.
    named = set(re.findall(r"\bEMBEDSERVE_[A-Z][A-Z0-9_]*\b", source)) - {"EMBEDSERVE_FIELD_NAME"}
    pages = [ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")]
    documented = "\n".join(page.read_text() for page in pages)
    assert "EMBEDSERVE_ATTENTION_KERNEL" in named  # the scan finds what it is for
    assert {name for name in named if name not in documented} == set()
