"""What an architecture module provides, and what it hands back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import Heads
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.st_modules import ModelConfigError
from embedserve.models.weights import Weights

# The one name every architecture gives its final hidden state [batch, sequence, hidden].
HIDDEN_STATE = "last_hidden_state"


@dataclass(frozen=True)
class Encoded:
    """An architecture's result: the final hidden state (always named HIDDEN_STATE)."""

    hidden: str
    hidden_size: int


Build = Callable[[GraphBuilder, HFConfig, Weights], Encoded]


@dataclass(frozen=True)
class Family:
    """One architecture module, as the registry knows it.

    ``model_types`` are config.json ``model_type`` values; ``classes`` are class-name stems
    matched as ``<stem>Model`` or ``<stem>For*`` in ``architectures`` when model_type is absent.
    ``anchor`` is one tensor every checkpoint of the family has, named as the bare model names
    it; it locates the prefix (``bert.``, ``model.``, ...) a ``*For*`` checkpoint adds.
    ``claims`` picks out configs of this family that another family's model_type names
    (JinaBERT's remote code says model_type "bert"); it is asked before any model_type.
    ``first_position`` is the position id of a text's first token (RoBERTa's padding_idx + 1):
    the rows of the position table below it are never used by text.
    """

    name: str
    model_types: tuple[str, ...]
    classes: tuple[str, ...]
    anchor: str
    build: Build
    claims: Callable[[HFConfig], bool] | None = None
    first_position: Callable[[HFConfig], int] = lambda c: 0

    def matches_class(self, class_name: str) -> bool:
        return any(
            class_name == stem + "Model" or class_name.startswith(stem + "For")
            for stem in self.classes
        )


def attention_heads(
    c: HFConfig,
    hidden: int,
    num_heads: int,
    num_kv_heads: int | None = None,
    head_dim: int | None = None,
) -> Heads:
    """The attention heads config.json sets; an error naming it where its sizes do not split
    (transformers refuses such a config; a graph compiled from it fails when it is loaded)."""
    if head_dim is None:
        if hidden % num_heads:
            raise ModelConfigError(
                f"{c.path}: hidden_size {hidden} is not a multiple of {num_heads} attention heads"
            )
        head_dim = hidden // num_heads
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if num_heads % kv_heads:
        raise ModelConfigError(
            f"{c.path}: {num_heads} attention heads do not share {kv_heads} key/value heads evenly"
        )
    return Heads(num_heads, kv_heads, head_dim)
