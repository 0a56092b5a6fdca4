"""DistilBERT: BERT without token types, with its own tensor names and a fixed eps."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.architectures.bert import encoder_dims
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.blocks import PostNormNames, post_norm_encoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import bert_embeddings, positions_from_zero
from embedserve.models.weights import Weights

EPS = 1e-12  # hard-coded in transformers' DistilBERT, not in its config

NAMES = PostNormNames(
    query="attention.q_lin",
    key="attention.k_lin",
    value="attention.v_lin",
    out="attention.out_lin",
    attention_norm="sa_layer_norm",
    up="ffn.lin1",
    down="ffn.lin2",
    output_norm="output_layer_norm",
)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    dims = encoder_dims(
        c,
        EPS,
        hidden=("dim", "hidden_size"),
        layers=("n_layers", "num_hidden_layers"),
        heads=("n_heads", "num_attention_heads"),
        inner=("hidden_dim", "intermediate_size"),
        act="activation",
    )
    max_positions = c.int("max_position_embeddings", default=512)
    x = bert_embeddings(g, w, dims.hidden, positions_from_zero, max_positions)
    post_norm_encoder(
        g, w, x, dims, layer_prefix="transformer.layer.", names=NAMES, output=HIDDEN_STATE
    )
    return Encoded(HIDDEN_STATE, dims.hidden)


FAMILY = Family(
    name="distilbert",
    model_types=("distilbert",),
    classes=("DistilBert",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
