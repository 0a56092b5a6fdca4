"""BERT (BertModel and BertFor* checkpoints): absolute positions, post-LN layers."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.blocks import BERT_NAMES, EncoderDims, post_norm_encoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import Positions, bert_embeddings, positions_from_zero
from embedserve.models.layers.linear import check_activation
from embedserve.models.weights import Weights


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    c.choice("position_embedding_type", ("absolute",), "absolute")
    return build_post_norm_encoder(g, c, w, positions_from_zero)


def build_post_norm_encoder(
    g: GraphBuilder, c: HFConfig, w: Weights, positions: Positions
) -> Encoded:
    """BERT's embeddings + encoder with ``positions`` deciding how tokens are numbered."""
    dims = encoder_dims(c, c.float("layer_norm_eps", default=1e-12))
    x = bert_embeddings(
        g,
        w,
        dims.hidden,
        positions,
        c.int("max_position_embeddings", default=512),
        type_vocab=c.int("type_vocab_size", default=2),
    )
    post_norm_encoder(
        g, w, x, dims, layer_prefix="encoder.layer.", names=BERT_NAMES, output=HIDDEN_STATE
    )
    return Encoded(HIDDEN_STATE, dims.hidden)


def encoder_dims(
    c: HFConfig,
    eps: float,
    *,
    hidden: tuple[str, ...] = ("hidden_size",),
    layers: tuple[str, ...] = ("num_hidden_layers",),
    heads: tuple[str, ...] = ("num_attention_heads",),
    inner: tuple[str, ...] = ("intermediate_size",),
    act: str = "hidden_act",
) -> EncoderDims:
    """A BERT-like config's sizes, under BERT's field names unless a family names them its way
    (DistilBERT's `dim`, `n_layers`...; each tuple is tried in order)."""
    width = c.count(*hidden)
    num_heads = c.count(*heads)
    return EncoderDims(
        hidden=width,
        layers=c.int(*layers),
        heads=attention_heads(c, width, num_heads),
        inner=c.int(*inner),
        act=check_activation(c.get(act, default="gelu"), c.path),
        eps=eps,
    )


FAMILY = Family(
    name="bert",
    model_types=("bert",),
    classes=("Bert",),
    anchor="embeddings.word_embeddings.weight",
    build=build,
)
