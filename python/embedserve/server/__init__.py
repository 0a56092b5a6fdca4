"""The HTTP server: OpenAI, Azure OpenAI and Azure AI inference embeddings over the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedserve.server.config import Limits, ModelSpec, ServerConfig

if TYPE_CHECKING:
    from embedserve.server.app import create_app

__all__ = ["Limits", "ModelSpec", "ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: `embedserve --help` builds the serve parser; it should not import Litestar or ORT.
    if name == "create_app":
        from embedserve.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
