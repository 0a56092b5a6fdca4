"""What an architecture module provides, and what it hands back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.builder import GraphBuilder
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
