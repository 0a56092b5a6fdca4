"""embedserve: text embeddings with a compiled core and an OpenAI-compatible server.

from embedserve import Classifier, Engine, Reranker
engine = Engine.from_pretrained("all-MiniLM-L6-v2", providers="cpu")
vectors = engine.embed(["a text", "another"]).embeddings
reranker = Reranker.from_pretrained("./my-cross-encoder")
ranked = reranker.rank("a query", ["a document", "another"])
classifier = Classifier.from_pretrained("./my-text-classifier")
labels = classifier.predict(["a text", ("a first text", "its pair")])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from embedserve._version import __version__

if TYPE_CHECKING:
    from embedserve.classification import Classifier, Label
    from embedserve.engine import EmbeddingResult, Engine, ModelInfo
    from embedserve.errors import InputError, InputTooLongError, InvalidTokenError
    from embedserve.loading import LoadOptions
    from embedserve.reranker import Ranked, Reranker, RerankerInfo
    from embedserve.sparse import SparseEncoder, SparseVector

__all__ = [
    "Classifier",
    "EmbeddingResult",
    "Engine",
    "InputError",
    "InputTooLongError",
    "InvalidTokenError",
    "Label",
    "LoadOptions",
    "ModelInfo",
    "Ranked",
    "Reranker",
    "RerankerInfo",
    "SparseEncoder",
    "SparseVector",
    "__version__",
]

_LAZY = {
    "Classifier": "embedserve.classification",
    "Label": "embedserve.classification",
    "Engine": "embedserve.engine",
    "EmbeddingResult": "embedserve.engine",
    "ModelInfo": "embedserve.engine",
    "InputError": "embedserve.errors",
    "InputTooLongError": "embedserve.errors",
    "InvalidTokenError": "embedserve.errors",
    "LoadOptions": "embedserve.loading",
    "Reranker": "embedserve.reranker",
    "RerankerInfo": "embedserve.reranker",
    "Ranked": "embedserve.reranker",
    "SparseEncoder": "embedserve.sparse",
    "SparseVector": "embedserve.sparse",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import embedserve` (and the CLI's --help) should not load ONNX Runtime.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
