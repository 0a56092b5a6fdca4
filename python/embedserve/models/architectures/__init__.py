"""One module per model family, each reading config.json and composing ``layers``.

Adding a family
---------------
Write ``architectures/<family>.py`` with a ``build(g, config, weights) -> Encoded`` function
and a ``FAMILY = Family(...)`` naming its config.json ``model_type`` values, its class-name
stems and one anchor tensor, then list it in ``FAMILIES`` below. ``build`` reads sizes from
``config`` (HFConfig's getters accept the field names of both transformers 4.x and 5.x), asks
``weights`` for tensors by the bare model's names (prefixes, sharding and fp16/bf16 upcasting
are handled there), wires pieces from ``embedserve.models.layers``, and names its final hidden
state ``HIDDEN_STATE`` ("last_hidden_state", [batch, sequence, hidden]). Add a tiny
random-weight model of the family to tests/models/ to prove it matches transformers.

``static_embedding`` is the one module outside ``FAMILIES``: sentence-transformers'
StaticEmbedding has no config.json, so modules.json, not a model_type, selects it
(``graph.compiled_onnx``).

Adding a head
-------------
``compiler.build_model(model_dir, head=...)`` takes a ``Head``: a function
``(g, config, weights, encoded) -> Output`` that appends nodes reading ``encoded.hidden``
(e.g. take position 0, a dense layer, tanh, a classifier for BertForSequenceClassification)
and returns the name and dims of its result, which becomes the graph's output. Head tensors
sit outside the encoder prefix ("classifier.weight"); ``weights.get`` finds them by full name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from embedserve.models.architectures import (
    bert,
    deberta_v2,
    distilbert,
    gemma3,
    gte,
    jina_bert,
    llama,
    modernbert,
    mpnet,
    nomic_bert,
    qwen3,
    roberta,
    t5,
)
from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError

FAMILIES: tuple[Family, ...] = (
    bert.FAMILY,
    roberta.FAMILY,
    distilbert.FAMILY,
    mpnet.FAMILY,
    modernbert.FAMILY,
    qwen3.FAMILY,
    llama.FAMILY,
    gemma3.FAMILY,
    nomic_bert.FAMILY,
    gte.FAMILY,
    jina_bert.FAMILY,
    deberta_v2.FAMILY,
    t5.FAMILY,
)

__all__ = ["FAMILIES", "HIDDEN_STATE", "Encoded", "Family", "by_family", "family_for", "supported"]


def supported() -> str:
    """The supported model types and architecture classes, for error messages and docs."""
    types = sorted(t for f in FAMILIES for t in f.model_types)
    classes = sorted(stem + "Model" for f in FAMILIES for stem in f.classes)
    return (
        f"model_type {', '.join(types)} (architectures {', '.join(classes)} and their *For* heads)"
    )


def family_for(config: HFConfig) -> Family:
    """The family that compiles ``config``, else UnsupportedArchitectureError naming it.

    A family's ``claims`` comes first (remote code that reuses another model_type); then
    model_type is authoritative when present (NomicBertModel says "nomic_bert", which a
    substring test on the class name would wrongly accept); architectures is the fallback.
    """
    for family in FAMILIES:
        if family.claims is not None and family.claims(config):
            return family
    model_type = config.model_type
    for family in FAMILIES:
        if model_type is not None:
            if model_type in family.model_types:
                return family
        elif any(family.matches_class(a) for a in config.architectures):
            return family
    raise UnsupportedArchitectureError(
        f"{config.path}: architectures {config.architectures} (model_type {model_type!r}) "
        f"cannot be compiled; supported: {supported()}"
    )


T = TypeVar("T")


def by_family(config: HFConfig, table: Mapping[str, T], part: str, models: str) -> T:
    """``table``'s entry for the family of ``config`` (a head, keyed by family name), else
    UnsupportedArchitectureError saying the family has no ``part`` and which ones ``models``
    can be compiled for."""
    family = family_for(config)
    if family.name not in table:
        raise UnsupportedArchitectureError(
            f"{config.path}: {family.name} has no {part} here; {models} can be compiled "
            f"for {', '.join(sorted(table))}"
        )
    return table[family.name]
