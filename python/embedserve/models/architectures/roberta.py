"""RoBERTa, XLM-RoBERTa and CamemBERT: BERT with positions counted from padding_idx + 1."""

from __future__ import annotations

from functools import partial

from embedserve.models.architectures.base import Encoded, Family
from embedserve.models.architectures.bert import build_post_norm_encoder
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import positions_after_padding_idx
from embedserve.models.weights import Weights


def padding_idx(c: HFConfig) -> int:
    return c.int("pad_token_id", default=1)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    c.choice("position_embedding_type", ("absolute",), "absolute")
    return build_post_norm_encoder(
        g, c, w, partial(positions_after_padding_idx, padding_idx=padding_idx(c))
    )


FAMILY = Family(
    name="roberta",
    model_types=("roberta", "xlm-roberta", "camembert"),
    classes=("Roberta", "XLMRoberta", "Camembert"),
    anchor="embeddings.word_embeddings.weight",
    build=build,
    first_position=lambda c: padding_idx(c) + 1,
)
