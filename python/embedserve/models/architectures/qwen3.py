"""Qwen3 and Qwen2 decoders as embedders: Llama's stack (see ``llama``); Qwen3 adds per-head
q/k RMSNorm, Qwen2 has q/k/v biases instead, and sliding windows follow use_sliding_window."""

from __future__ import annotations

from embedserve.models.architectures.base import Encoded, Family
from embedserve.models.architectures.llama import build_decoder
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.weights import Weights

FULL, SLIDING = "full_attention", "sliding_attention"


def _layer_types(c: HFConfig, layers: int) -> list[str]:
    # 4.x configs without layer_types: sliding from max_window_layers on, if enabled at all.
    if c.get("use_sliding_window", default=False) and c.get("sliding_window") is not None:
        first = c.int("max_window_layers", default=layers)
        default = [SLIDING if i >= first else FULL for i in range(layers)]
    else:
        default = [FULL] * layers
    types = c.layer_types(layers, default)
    if not c.get("use_sliding_window", default=False):
        # transformers ignores sliding entries unless use_sliding_window is set.
        types = [FULL] * layers
    return types


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    layers = c.int("num_hidden_layers")
    windows = [c.int("sliding_window") if t == SLIDING else None for t in _layer_types(c, layers)]
    # Qwen3's q_norm/k_norm: RMSNorm over head_dim of each head; Qwen2 has none.
    head_norms = w.has("layers.0.self_attn.q_norm.weight")
    return build_decoder(g, c, w, windows, head_norms=head_norms)


FAMILY = Family(
    name="qwen3",
    model_types=("qwen3", "qwen2"),
    classes=("Qwen3", "Qwen2"),
    anchor="embed_tokens.weight",
    build=build,
)
