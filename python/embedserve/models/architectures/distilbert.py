"""DistilBERT: BERT without token types, with its own tensor names and a fixed eps."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import Heads, padding_mask
from embedserve.models.layers.blocks import PostNormNames, post_norm_layer
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import positions_from_zero, tokens
from embedserve.models.layers.linear import check_activation
from embedserve.models.layers.norms import layer_norm
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
    hidden = c.int("dim", "hidden_size")
    layers = c.int("n_layers", "num_hidden_layers")
    num_heads = c.int("n_heads", "num_attention_heads")
    heads = Heads(num_heads, num_heads, hidden // num_heads)
    inner = c.int("hidden_dim", "intermediate_size")
    act = check_activation(c.get("activation", default="gelu"), c.path)

    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    pos = positions_from_zero(
        g,
        w,
        "embeddings.position_embeddings",
        "embeddings/position",
        c.int("max_position_embeddings", default=512),
        hidden,
    )
    x = g.op("Add", [x, pos], "embeddings/add_position")
    x = layer_norm(
        g,
        w,
        "embeddings.LayerNorm",
        x,
        "embeddings/layer_norm",
        hidden,
        EPS,
        output=HIDDEN_STATE if layers == 0 else None,
    )
    mask = padding_mask(g)
    for n in range(layers):
        x = post_norm_layer(
            g,
            w,
            x,
            mask,
            f"transformer.layer.{n}.",
            NAMES,
            heads,
            hidden,
            inner,
            act,
            EPS,
            name=f"layer.{n}",
            output=HIDDEN_STATE if n == layers - 1 else None,
        )
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="distilbert",
    model_types=("distilbert",),
    classes=("DistilBert",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
