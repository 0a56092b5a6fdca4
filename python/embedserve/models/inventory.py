"""What `embedserve models` shows: the catalog, and what the cache holds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedserve.models.cache import cache_root
from embedserve.models.catalog import CATALOG
from embedserve.models.family import model_family


@dataclass(frozen=True)
class CachedModel:
    name: str
    description: str
    source: str
    folder: Path
    cached: bool
    size_bytes: int
    # The architecture family of a cached folder (models/family.py); None when not cached or
    # when no family embedserve compiles describes it.
    family: str | None = None


@dataclass(frozen=True)
class Inventory:
    root: Path
    catalog: list[CachedModel]
    # Folders under models/ that no catalog entry names (left by older versions, say).
    others: list[CachedModel]
    compiled_graphs: int
    compiled_bytes: int


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def inventory(root: Path | None = None) -> Inventory:
    root = root or cache_root()
    models = root / "models"
    catalog = []
    for entry in CATALOG:
        folder = models / entry.name
        cached = (folder / ".complete").exists()
        source = (
            " + ".join(entry.requirements)
            if len(entry.requirements) < 3
            else (
                f"{entry.requirements[0]} … {entry.requirements[-1]} ({len(entry.requirements)} wheels)"
            )
        )
        catalog.append(
            CachedModel(
                entry.name,
                entry.description,
                source,
                folder,
                cached,
                _size(folder) if cached else 0,
                model_family(folder) if cached else None,
            )
        )
    known = {entry.name for entry in CATALOG}
    others = (
        [
            CachedModel(p.name, "", "", p, (p / ".complete").exists(), _size(p), model_family(p))
            for p in sorted(models.iterdir())
            if p.is_dir() and not p.name.startswith(".") and p.name not in known
        ]
        if models.exists()
        else []
    )
    compiled = root / "compiled"
    graphs = sorted(compiled.glob("*/model.onnx")) if compiled.exists() else []
    return Inventory(root, catalog, others, len(graphs), sum(_size(g.parent) for g in graphs))


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def format_inventory(inv: Inventory) -> str:
    lines = ["Catalog (embedserve pull NAME fetches one; a folder path or hub repo id works too):"]
    width = max(len(m.name) for m in inv.catalog)
    # The family column is as wide as its longest entry ("-": not cached, or no family).
    family_width = max(len(m.family or "-") for m in inv.catalog)
    for m in inv.catalog:
        state = f"cached, {_mb(m.size_bytes)}" if m.cached else "not cached"
        family = m.family or "-"
        lines.append(f"  {m.name:<{width}}  {state:<18}  {family:<{family_width}}  {m.description}")
        lines.append(f"  {'':<{width}}  from {m.source}")
    if inv.others:
        lines.append("Other folders in the cache:")
        lines += [
            f"  {m.name}  {_mb(m.size_bytes)}" + (f"  {m.family}" if m.family else "")
            for m in inv.others
        ]
    lines.append(f"Compiled graphs: {inv.compiled_graphs} ({_mb(inv.compiled_bytes)})")
    lines.append(f"Cache: {inv.root}")
    return "\n".join(lines) + "\n"
