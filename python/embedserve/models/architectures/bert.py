"""BERT (BertModel and BertFor* checkpoints): absolute positions, post-LN layers."""

from __future__ import annotations

from collections.abc import Callable

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.attention import Heads, padding_mask
from embedserve.models.layers.blocks import BERT_NAMES, post_norm_layer
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import positions_from_zero, token_types, tokens
from embedserve.models.layers.linear import check_activation
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

# Positions for [batch, sequence] input_ids: (graph, weights, table prefix, scope, rows, hidden).
Positions = Callable[[GraphBuilder, Weights, str, str, int, int], str]


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    c.choice("position_embedding_type", ("absolute",), "absolute")
    return build_post_norm_encoder(g, c, w, positions_from_zero)


def build_post_norm_encoder(
    g: GraphBuilder, c: HFConfig, w: Weights, positions: Positions
) -> Encoded:
    """BERT's embeddings + encoder with ``positions`` deciding how tokens are numbered."""
    hidden = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    num_heads = c.int("num_attention_heads")
    if hidden % num_heads:
        raise ValueError(f"{c.path}: hidden_size {hidden} is not a multiple of {num_heads} heads")
    heads = Heads(num_heads, num_heads, hidden // num_heads)
    inner = c.int("intermediate_size")
    eps = c.float("layer_norm_eps", default=1e-12)
    act = check_activation(c.get("hidden_act", default="gelu"), c.path)

    x = tokens(g, w, "embeddings.word_embeddings", "embeddings/word", hidden)
    types = token_types(
        g,
        w,
        "embeddings.token_type_embeddings",
        "embeddings/token_type",
        c.int("type_vocab_size", default=2),
        hidden,
    )
    x = g.op("Add", [x, types], "embeddings/add_token_type")
    pos = positions(
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
        eps,
        output=HIDDEN_STATE if layers == 0 else None,
    )
    mask = padding_mask(g)
    for n in range(layers):
        x = post_norm_layer(
            g,
            w,
            x,
            mask,
            f"encoder.layer.{n}.",
            BERT_NAMES,
            heads,
            hidden,
            inner,
            act,
            eps,
            name=f"layer.{n}",
            output=HIDDEN_STATE if n == layers - 1 else None,
        )
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="bert",
    model_types=("bert",),
    classes=("Bert",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
