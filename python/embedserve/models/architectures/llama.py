"""Llama and Mistral decoders as embedders (e5-mistral, SFR-Embedding, LLM2Vec-style folders):
causal attention, GQA, RMSNorm, rotary (default, linear or llama3 scaling), SwiGLU. Mistral
adds a causal sliding window to every layer when config.json sets one."""

from __future__ import annotations

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.blocks import DecoderDims, pre_norm_decoder
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import check_activation
from embedserve.models.layers.rotary import rotary
from embedserve.models.weights import Weights


def decoder_dims(c: HFConfig) -> DecoderDims:
    """Sizes under the field names Llama, Mistral and Qwen configs share (Mistral's config
    writes head_dim null where it is hidden_size / heads)."""
    hidden = c.int("hidden_size")
    num_heads = c.count("num_attention_heads")
    # None: hidden_size / heads.
    head_dim = c.count("head_dim") if c.get("head_dim") is not None else None
    return DecoderDims(
        hidden=hidden,
        heads=attention_heads(
            c, hidden, num_heads, c.count("num_key_value_heads", default=num_heads), head_dim
        ),
        inner=c.int("intermediate_size"),
        act=check_activation(c.get("hidden_act", default="silu"), c.path),
        eps=c.float("rms_norm_eps", default=1e-6),
    )


def build_decoder(
    g: GraphBuilder, c: HFConfig, w: Weights, windows: list[int | None], *, head_norms: bool = False
) -> Encoded:
    """Llama's stack (``pre_norm_decoder``) with one rotary table for every layer and
    ``windows[n]`` (None: none) masking layer n: Llama, Mistral, Qwen."""
    dims = decoder_dims(c)
    rope = rotary(
        g, dims.heads.head_dim, c.int("max_position_embeddings"), c.rope_parameters(), c.path
    )
    pre_norm_decoder(g, w, dims, windows, rope, output=HIDDEN_STATE, head_norms=head_norms)
    return Encoded(HIDDEN_STATE, dims.hidden)


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    layers = c.int("num_hidden_layers")
    # MistralModel masks every layer with sliding_window when it is set; Llama has none.
    window = c.get("sliding_window") if c.model_type == "mistral" else None
    window = None if window is None else int(window)
    return build_decoder(g, c, w, [window] * layers)


FAMILY = Family(
    name="llama",
    model_types=("llama", "mistral"),
    classes=("Llama", "Mistral"),
    anchor="embed_tokens.weight",
    build=build,
)
