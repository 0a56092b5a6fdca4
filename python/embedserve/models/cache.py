"""Where embedserve keeps pulled models and compiled graphs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$EMBEDSERVE_CACHE`, else `$XDG_CACHE_HOME/embedserve`, else `~/.cache/embedserve`."""
    explicit = os.environ.get("EMBEDSERVE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "embedserve"
