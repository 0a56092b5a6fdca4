"""NomicBERT (nomic-embed-text v1 / v1.5 / v2-moe, remote code ``modeling_hf_nomic_bert.py``):
post-LN BERT with a fused Wqkv, rotary positions on all or part of each head, a gated (SwiGLU)
or plain feed-forward, and biases only where the config asks for them; v2 swaps every
``moe_every_n_layers``-th feed-forward for a top-k mixture of experts. GPT-2-style field names."""

from __future__ import annotations

import numpy as np

from embedserve.models.architectures.base import HIDDEN_STATE, Encoded, Family, attention_heads
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.blocks import (
    EncoderDims,
    FeedForward,
    PostNormNames,
    post_norm_encoder,
)
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import bert_embeddings, positions_from_zero
from embedserve.models.layers.linear import activation, linear
from embedserve.models.layers.mlp import feed_forward, gated
from embedserve.models.layers.rotary import Rotary, rotary
from embedserve.models.weights import Weights

# activation_function -> the activation of the gate (fc12) in NomicBertGatedMLP.
GATED = {"swiglu": "silu", "geglu": "gelu", "glu": "sigmoid"}
# The plain NomicBertMLP is handed F.gelu whatever its name says: exact GELU for all four.
PLAIN = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh")
# NomciBertGatedMLP rounds its width up to a multiple of this.
GATED_MULTIPLE = 256


def _refuse(c: HFConfig) -> None:
    """Settings the reference implements and this graph does not, or that are not text BERT."""
    unsupported = {
        "prenorm": c.get("prenorm", default=False),
        "rotary_scaling_factor": c.get("rotary_scaling_factor"),
        "rotary_head_dim": c.get("rotary_head_dim", default=False),
        "norm_mlp": c.get("norm_mlp", default=False),
        "num_shared_experts": c.get("num_shared_experts", default=0),
        "expert_choice_router": c.get("expert_choice_router", default=False),
    }
    if c.get("moe_every_n_layers", default=0) and c.get("moe_impl", default="megablocks") != (
        "megablocks"
    ):
        unsupported["moe_impl"] = c.get("moe_impl")
    kv_heads = c.get("num_heads_kv")
    if kv_heads is not None and kv_heads != c.get("n_head", "num_attention_heads"):
        unsupported["num_heads_kv"] = kv_heads
    for field, value in unsupported.items():
        if value:
            raise UnsupportedArchitectureError(
                f"{c.path}: nomic_bert with {field}={value!r} is not supported (embedserve "
                "compiles post-norm NomicBERT text encoders with fixed-base rotary and, for "
                "v2, megablocks top-k experts without shared experts)"
            )


def _inner(c: HFConfig, hidden: int, gate: bool) -> int:
    inner = c.get("n_inner")
    if not gate:
        return int(inner) if inner is not None else 4 * hidden
    inner = int(inner) if inner is not None else int(8 * hidden / 3)
    return (inner + GATED_MULTIPLE - 1) // GATED_MULTIPLE * GATED_MULTIPLE


def _moe(g: GraphBuilder, c: HFConfig, w: Weights, x: str, prefix: str, name: str) -> str:
    """megablocks' dMoE (nomic-embed-text-v2-moe): softmax router, top-k experts weighted by
    their router probability (divided by its p-norm if moe_normalize_expert_weights = p), each
    expert act(x @ w1ₑᵀ) @ w2ₑ, plus one shared bias.

    Every expert runs on every token and the unchosen ones get weight 0: a graph of standard
    ops has no gather-by-expert, and folding the weights into the hidden units makes all
    experts one MatMul pair ([E * ffn] wide) instead of E of them.
    """
    hidden = c.int("n_embd", "hidden_size")
    experts = c.int("num_experts")
    top_k = c.int("moe_top_k")
    ffn = c.int("n_inner") // c.int("ffn_div", default=1)
    act = c.choice("activation_function", PLAIN, default="gelu")
    logits = linear(g, w, prefix + "router.layer", x, name + "/router", (experts, hidden), False)
    probs = g.op("Softmax", [logits], name + "/router_probs", axis=-1)
    values, _ = g.ops(
        "TopK", [probs, g.const([top_k], np.int64)], name + "/top_k", outputs=2, axis=-1
    )
    kth = g.op(
        "Slice",
        [
            values,
            g.const([top_k - 1], np.int64),
            g.const([top_k], np.int64),
            g.const([-1], np.int64),
        ],
        name + "/kth",
    )
    chosen = g.op("GreaterOrEqual", [probs, kth], name + "/chosen")
    weights = g.op("Where", [chosen, probs, g.const(0.0)], name + "/weights")
    p = c.get("moe_normalize_expert_weights")
    if p:
        p = float(p)
        powered = g.op("Pow", [weights, g.const(p)], name + "/norm_pow")
        total = g.op(
            "ReduceSum", [powered, g.const([-1], np.int64)], name + "/norm_sum", keepdims=1
        )
        norm = g.op("Pow", [total, g.const(1.0 / p)], name + "/norm")
        weights = g.op("Div", [weights, norm], name + "/normalized")
    w1 = g.weight(
        prefix + "experts.mlp.w1_t", w.get(prefix + "experts.mlp.w1", (experts * ffn, hidden)).T
    )
    w2 = g.weight(
        prefix + "experts.mlp.w2", w.get(prefix + "experts.mlp.w2", (experts * ffn, hidden))
    )
    h = activation(g, "gelu", g.op("MatMul", [x, w1], name + "/w1"), name + "/" + act)
    h = g.op("Reshape", [h, g.const([0, 0, experts, ffn], np.int64)], name + "/per_expert")
    scale = g.op("Unsqueeze", [weights, g.const([-1], np.int64)], name + "/weights_unsqueeze")
    h = g.op("Mul", [h, scale], name + "/weighted")
    h = g.op("Reshape", [h, g.const([0, 0, experts * ffn], np.int64)], name + "/merged")
    out = g.op("MatMul", [h, w2], name + "/w2")
    bias = g.weight(prefix + "experts.bias", w.get(prefix + "experts.bias", (hidden,)))
    return g.op("Add", [out, bias], name + "/bias")


NAMES = PostNormNames(
    qkv="attn.Wqkv",
    out="attn.out_proj",
    attention_norm="norm1",
    up="mlp.fc1",
    down="mlp.fc2",
    output_norm="norm2",
)


def _mlp(g: GraphBuilder, c: HFConfig, w: Weights, dims: EncoderDims, act: str) -> FeedForward:
    """Each layer's feed-forward: experts every moe_every_n_layers-th layer, else gated or plain."""
    every = c.int("moe_every_n_layers", default=0)

    def mlp(x: str, n: int, p: str, scope: str) -> str:
        if every > 0 and n % every == 1:  # the reference's Block(moe=i % every_n == 1)
            return _moe(g, c, w, x, p + "mlp.", scope + "/moe")
        if act in GATED:
            # fc11 is the value, fc12 the gate: fc2(fc11(x) * act(fc12(x))).
            return gated(
                g,
                w,
                x,
                scope + "/mlp",
                p + "mlp.fc12",
                p + "mlp.fc11",
                p + "mlp.fc2",
                dims.hidden,
                dims.inner,
                GATED[act],
                None,
            )
        return feed_forward(
            g,
            w,
            x,
            scope + "/mlp",
            p + "mlp.fc1",
            p + "mlp.fc2",
            dims.hidden,
            dims.inner,
            "gelu",
            None,
        )

    return mlp


def build(g: GraphBuilder, c: HFConfig, w: Weights) -> Encoded:
    _refuse(c)
    hidden = c.int("n_embd", "hidden_size")
    num_heads = c.count("n_head", "num_attention_heads")
    act = c.choice("activation_function", (*GATED, *PLAIN), default="gelu")
    dims = EncoderDims(
        hidden=hidden,
        layers=c.int("n_layer", "num_hidden_layers"),
        heads=attention_heads(c, hidden, num_heads),
        inner=_inner(c, hidden, act in GATED),
        act=act,
        eps=c.float("layer_norm_epsilon", default=1e-5),
    )
    max_positions = c.int("n_positions", "max_position_embeddings", default=2048)
    fraction = c.float("rotary_emb_fraction", default=0.0)
    rope: Rotary | None = None
    if fraction > 0:
        params = {"rope_theta": c.float("rotary_emb_base", default=10_000.0)}
        params["partial_rotary_factor"] = fraction
        interleaved = bool(c.get("rotary_emb_interleaved", default=False))
        rope = rotary(
            g, dims.heads.head_dim, max_positions, params, c.path, interleaved=interleaved
        )
    # token_type_ids default to zeros in the reference; the tokenizer sends them anyway.
    x = bert_embeddings(
        g,
        w,
        hidden,
        positions_from_zero if rope is None else None,
        max_positions,
        type_vocab=c.int("type_vocab_size", default=2),
    )
    post_norm_encoder(
        g,
        w,
        x,
        dims,
        layer_prefix="encoder.layers.",
        names=NAMES,
        output=HIDDEN_STATE,
        mlp=_mlp(g, c, w, dims, act),
        embeddings_norm="emb_ln",
        rotary=rope,
        projection_bias=None,
    )
    return Encoded(HIDDEN_STATE, hidden)


FAMILY = Family(
    name="nomic_bert",
    model_types=("nomic_bert",),
    classes=("NomicBert",),
    anchor="emb_ln.weight",
    build=build,
)
