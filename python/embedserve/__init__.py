"""embedserve: text embeddings with a compiled core and an OpenAI-compatible server."""

from __future__ import annotations

from embedserve._version import __version__

__all__ = ["__version__"]
