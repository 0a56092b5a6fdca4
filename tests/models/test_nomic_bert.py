"""NomicBERT (nomic-embed-text v1 / v1.5 / v2-moe) against a PyTorch reference written from its
remote code: nomic-ai/contrastors, src/contrastors/models/huggingface/modeling_hf_nomic_bert.py
at commit 613ddfd37309e538cceadb05b1e6423e7b09f603 (the file the hub's nomic-ai/nomic-bert-2048
serves as ``modeling_hf_nomic_bert.py``): NomicBertEmbeddings, NomicBertAttention with
NomicBertRotaryEmbedding / apply_rotary_emb, NomicBertGatedMLP (sic "NomciBertGatedMLP") and
NomicBertMLP, the post-norm branch of NomicBertBlock, and NomicBertModel.forward. The v2 mixture
of experts follows the same commit's src/contrastors/layers/moe.py (MoEBlock: softmax router,
top-k, weighted expert sum, shared bias), layers/block.py (megablocks dMoE arguments,
moe_normalize_expert_weights) and models/encoder/modeling_nomic_bert.py (Block(moe=i % every_n
== 1)), with megablocks' tensor layout as huggingface/text-embeddings-inference@0d124dc9 reads
it in backends/candle/src/models/nomic.rs (router.layer, experts.mlp.w1 / w2 as [experts * ffn,
hidden], experts.bias).

Folders carry nomic-embed-text-v1.5's config.json fields (GPT-2 names, auto_map to the remote
code) and its tensor names; embedserve never runs that code, it compiles the weights.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.models.hf_config import UnsupportedArchitectureError

from tests.models.test_families import COSINE, N_TEXTS, _check
from tests.support import cosines
from tests.support.remote_code import (
    Built,
    build_variants,
    check_precision_floor,
    edited_copy,
    mixed_texts,
)

AUTO_MAP = {
    "AutoConfig": "nomic-ai/nomic-bert-2048--configuration_hf_nomic_bert.NomicBertConfig",
    "AutoModel": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertModel",
    "AutoModelForMaskedLM": "nomic-ai/nomic-bert-2048--modeling_hf_nomic_bert.NomicBertForPreTraining",
}
# nomic-embed-text-v1.5's config.json, shrunk: same fields, tiny sizes.
V15 = {
    "_name_or_path": "nomic-ai/nomic-embed-text-v1.5",
    "activation_function": "swiglu",
    "architectures": ["NomicBertModel"],
    "attn_pdrop": 0.0,
    "auto_map": AUTO_MAP,
    "bos_token_id": None,
    "causal": False,
    "dense_seq_output": True,
    "embd_pdrop": 0.0,
    "eos_token_id": None,
    "fused_bias_fc": True,
    "fused_dropout_add_ln": True,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-12,
    "max_trained_positions": 2048,
    "mlp_fc1_bias": False,
    "mlp_fc2_bias": False,
    "model_type": "nomic_bert",
    "n_embd": 32,
    "n_head": 4,
    "n_inner": 256,
    "n_layer": 2,
    "n_positions": 128,
    "pad_vocab_size_multiple": 64,
    "parallel_block": False,
    "parallel_block_tied_norm": False,
    "prenorm": False,
    "qkv_proj_bias": False,
    "reorder_and_upcast_attn": False,
    "resid_pdrop": 0.0,
    "rotary_emb_base": 1000,
    "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
    "rotary_scaling_factor": None,
    "scale_attn_by_inverse_layer_idx": False,
    "scale_attn_weights": True,
    "summary_activation": None,
    "summary_first_dropout": 0.0,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "torch_dtype": "float32",
    "transformers_version": "4.34.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "use_flash_attn": True,
    "use_rms_norm": False,
    "use_xentropy": True,
    "vocab_size": 30528,
}
PROMPTS = {
    "search_query": "search_query: ",
    "search_document": "search_document: ",
    "classification": "classification: ",
    "clustering": "clustering: ",
}

VARIANTS: dict[str, dict[str, Any]] = {
    # nomic-embed-text-v1.5 as shipped: SwiGLU, no biases, full rotary, mean + Normalize.
    "v1.5": {"config": {}, "pooling": "mean", "normalize": True, "max_seq_length": 48},
    # What the other flags do: half of each head rotated in GPT-J pairs, GeGLU with biases
    # (n_inner rounded up to 256 by the gated MLP), CLS pooling.
    "partial-interleaved-geglu": {
        "config": {
            "rotary_emb_fraction": 0.5,
            "rotary_emb_interleaved": True,
            "rotary_emb_base": 10000,
            "activation_function": "geglu",
            "n_inner": 40,
            "qkv_proj_bias": True,
            "mlp_fc1_bias": True,
            "mlp_fc2_bias": True,
        },
        "pooling": "cls",
        "normalize": False,
        "max_seq_length": 64,
    },
    # nomic-embed-text-v2-moe's layout: XLM-R vocabulary, biases, experts in layers 1 and 3
    # (4 experts, top 2, weights as the router gives them).
    "v2-moe": {
        "config": {
            "activation_function": "gelu",
            "n_layer": 4,
            "n_inner": 48,
            "n_positions": 2048,
            "num_experts": 4,
            "moe_top_k": 2,
            "moe_every_n_layers": 2,
            "moe_impl": "megablocks",
            "moe_normalize_expert_weights": False,
            "num_shared_experts": 0,
            "expert_choice_router": False,
            "ffn_div": 1,
            "mlp_fc1_bias": True,
            "mlp_fc2_bias": True,
            "qkv_proj_bias": True,
            "rotary_emb_base": 10000,
            "type_vocab_size": 1,
            "layer_norm_epsilon": 1e-5,
            "pad_token_id": 1,
            "vocab_size": 250048,
        },
        "tokenizer": "xlmr",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 64,
    },
    # Top-3 of 4 experts with their weights L2-normalized, in every other layer of three.
    "v2-moe-normalized": {
        "config": {
            "activation_function": "gelu",
            "n_layer": 3,
            "n_inner": 48,
            "num_experts": 4,
            "moe_top_k": 3,
            "moe_every_n_layers": 2,
            "moe_normalize_expert_weights": 2,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "vocab_size": 250048,
        },
        "tokenizer": "xlmr",
        "pooling": "cls",
        "normalize": False,
        "max_seq_length": 48,
    },
    # No rotary: learned absolute positions, the plain (exact-GELU) MLP, one token type.
    "absolute-gelu": {
        "config": {
            "rotary_emb_fraction": 0.0,
            "activation_function": "gelu_new",
            "n_inner": 48,
            "type_vocab_size": 1,
        },
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 40,
    },
}


def _reference(config: dict[str, Any]) -> Any:
    """NomicBertModel's text path (eval, post-norm), parameters named as its state dict."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    hidden, heads = config["n_embd"], config["n_head"]
    head_dim = hidden // heads
    act = config["activation_function"]
    gated = act in ("glu", "swiglu", "geglu")
    inner = config["n_inner"]
    if gated:  # NomciBertGatedMLP's multiple_of=256
        inner = (inner + 255) // 256 * 256
    vocab = config["vocab_size"]
    multiple = config["pad_vocab_size_multiple"]
    vocab += (multiple - vocab % multiple) % multiple
    rotary_dim = int(head_dim * config["rotary_emb_fraction"])
    eps = config["layer_norm_epsilon"]

    def linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
        return nn.Linear(n_in, n_out, bias=bias)

    experts = config.get("num_experts", 0)
    every = config.get("moe_every_n_layers", 0)

    class Experts(nn.Module):
        """megablocks' dMoE parameters as the checkpoint names them."""

        def __init__(self) -> None:
            super().__init__()
            ffn = config["n_inner"]
            self.router = nn.Module()
            self.router.layer = nn.Linear(hidden, experts, bias=False)
            self.experts = nn.Module()
            self.experts.mlp = nn.Module()
            self.experts.mlp.w1 = nn.Parameter(torch.empty(experts * ffn, hidden))
            self.experts.mlp.w2 = nn.Parameter(torch.empty(experts * ffn, hidden))
            self.experts.bias = nn.Parameter(torch.zeros(hidden))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            x = x.reshape(-1, hidden)
            probs = F.softmax(self.router.layer(x), dim=-1)
            weights, chosen = torch.topk(probs, config["moe_top_k"], dim=-1)
            p = config.get("moe_normalize_expert_weights")
            if p:
                weights = weights / torch.norm(weights, p=p, dim=-1, keepdim=True)
            w1 = self.experts.mlp.w1.view(experts, -1, hidden)
            w2 = self.experts.mlp.w2.view(experts, -1, hidden)
            out = torch.zeros_like(x)
            for e in range(experts):
                rows, nth = torch.where(chosen == e)
                y = F.gelu(x[rows] @ w1[e].t()) @ w2[e]
                out[rows] += weights[rows, nth].unsqueeze(-1) * y
            return (out + self.experts.bias).reshape(shape)

    class Block(nn.Module):
        def __init__(self, moe: bool) -> None:
            super().__init__()
            self.attn = nn.Module()
            self.attn.Wqkv = linear(hidden, 3 * hidden, config["qkv_proj_bias"])
            self.attn.out_proj = linear(hidden, hidden, config["qkv_proj_bias"])
            self.moe = moe
            self.mlp = Experts() if moe else nn.Module()
            if gated and not moe:
                self.mlp.fc11 = linear(hidden, inner, config["mlp_fc1_bias"])
                self.mlp.fc12 = linear(hidden, inner, config["mlp_fc1_bias"])
            elif not moe:
                self.mlp.fc1 = linear(hidden, inner, config["mlp_fc1_bias"])
            if not moe:
                self.mlp.fc2 = linear(inner, hidden, config["mlp_fc2_bias"])
            self.norm1 = nn.LayerNorm(hidden, eps=eps)
            self.norm2 = nn.LayerNorm(hidden, eps=eps)

    def rotate_half(x: torch.Tensor, interleaved: bool) -> torch.Tensor:
        if not interleaved:
            x1, x2 = x.chunk(2, dim=-1)
            return torch.cat((-x2, x1), dim=-1)
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: (batch, seqlen, nheads, headdim); cos/sin: (seqlen, rotary_dim / 2)
        interleaved = config["rotary_emb_interleaved"]
        ro = cos.shape[-1] * 2
        if interleaved:
            cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        else:
            cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        cos, sin = cos[:, None, :], sin[:, None, :]
        rotated = x[..., :ro] * cos + rotate_half(x[..., :ro], interleaved) * sin
        return torch.cat([rotated, x[..., ro:]], dim=-1)

    class Model(nn.Module):
        hidden_size = hidden

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(vocab, hidden)
            if rotary_dim <= 0:
                self.embeddings.position_embeddings = nn.Embedding(config["n_positions"], hidden)
            if config["type_vocab_size"] > 0:
                self.embeddings.token_type_embeddings = nn.Embedding(
                    config["type_vocab_size"], hidden
                )
            self.emb_ln = nn.LayerNorm(hidden, eps=eps)
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList(
                Block(every > 0 and i % every == 1) for i in range(config["n_layer"])
            )

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            batch, seqlen = input_ids.shape
            x = self.embeddings.word_embeddings(input_ids)
            if config["type_vocab_size"] > 0:
                if token_type_ids is None:
                    token_type_ids = torch.zeros_like(input_ids)
                x = x + self.embeddings.token_type_embeddings(token_type_ids)
            if rotary_dim <= 0:
                x = x + self.embeddings.position_embeddings(torch.arange(seqlen))
            x = self.emb_ln(x)
            extended = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(
                torch.float32
            ).min
            if rotary_dim > 0:
                base = float(config["rotary_emb_base"])
                inv_freq = 1.0 / (
                    base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)
                )
                freqs = torch.outer(torch.arange(seqlen, dtype=torch.float32), inv_freq)
                cos, sin = torch.cos(freqs), torch.sin(freqs)
            for layer in self.encoder.layers:
                qkv = layer.attn.Wqkv(x).reshape(batch, seqlen, 3, heads, head_dim)
                q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
                if rotary_dim > 0:
                    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
                q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
                scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + extended
                context = (F.softmax(scores, dim=-1) @ v).permute(0, 2, 1, 3)
                attn = layer.attn.out_proj(context.reshape(batch, seqlen, hidden))
                x = layer.norm1(attn + x)
                if layer.moe:
                    mlp = layer.mlp(x)
                elif gated:
                    y, gate = layer.mlp.fc11(x), layer.mlp.fc12(x)
                    if act == "glu":
                        y = F.glu(torch.cat([y, gate], dim=-1), dim=-1)
                    else:
                        y = y * (F.silu(gate) if act == "swiglu" else F.gelu(gate))
                    mlp = layer.mlp.fc2(y)
                else:
                    mlp = layer.mlp.fc2(F.gelu(layer.mlp.fc1(x)))
                x = layer.norm2(mlp + x)
            return x

    return Model()


@pytest.fixture(scope="module")
def texts(reference: dict) -> list[str]:
    return mixed_texts(reference, N_TEXTS)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_tokenizer_dir: Path,
    xlmr_tokenizer_dir: Path,
    isolated_cache: None,
) -> dict[str, Built]:
    tokenizers = {"minilm": minilm_tokenizer_dir, "xlmr": xlmr_tokenizer_dir}
    return build_variants(tmp_path_factory, VARIANTS, V15, _reference, tokenizers, PROMPTS)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_nomic_bert_matches_reference(variant: str, built: dict, texts: list[str]) -> None:
    want, counts = built[variant].want(texts)
    assert len(set(counts.tolist())) >= 10
    assert counts.max() == VARIANTS[variant]["max_seq_length"]
    _check(built[variant].folder, texts, want, counts)


@pytest.mark.parametrize("prompt_name", ["search_query", "search_document"])
def test_nomic_prompts(prompt_name: str, built: dict, texts: list[str]) -> None:
    """nomic's task prefixes come from config_sentence_transformers.json's prompts."""
    prompt = PROMPTS[prompt_name]
    want, counts = built["v1.5"].want([prompt + t for t in texts])
    engine = Engine.from_pretrained(built["v1.5"].folder)
    got = engine.embed(texts, prompt_name=prompt_name)
    assert got.token_counts.tolist() == counts.tolist()
    assert cosines(got.embeddings, want).min() >= COSINE


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"prenorm": True}, "prenorm"),
        ({"rotary_scaling_factor": 2.0}, "rotary_scaling_factor"),
        ({"moe_every_n_layers": 2, "num_shared_experts": 1}, "num_shared_experts"),
        ({"activation_function": "relu"}, "activation_function"),
    ],
)
def test_nomic_refuses_what_it_does_not_compile(
    edit: dict, field: str, built: dict, tmp_path: Path
) -> None:
    from embedserve.models.compiler import build_model

    folder = edited_copy(built["v1.5"].folder, edit, tmp_path / "edited")
    with pytest.raises(UnsupportedArchitectureError, match=field):
        build_model(folder)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_nomic_precisions_hold_their_floors(precision: str, built: dict, texts: list[str]) -> None:
    """The fp16 graph pass and static int8 apply to the compiled graph as to any other."""
    check_precision_floor(built["v1.5"], texts, precision)


def test_nomic_moe_on_openvino(built: dict, texts: list[str]) -> None:
    """The MoE's TopK / GreaterOrEqual / Where routing runs on OpenVINO as on ONNX Runtime."""
    want, counts = built["v2-moe"].want(texts)
    got = Engine.from_pretrained(built["v2-moe"].folder, runtime="openvino").embed(texts)
    assert got.token_counts.tolist() == counts.tolist()
    assert cosines(got.embeddings, want).min() >= COSINE


def test_a_limit_past_n_positions_is_cut_to_the_rotary_table(built: dict) -> None:
    """A sentence_bert_config.json that allows more tokens than config.json's n_positions (the
    rows of the compiled rotary table): texts are cut at n_positions, not failed in the graph."""
    folder = built["v1.5"].folder
    limited = folder.parent / "v1.5-long-limit"
    shutil.copytree(folder, limited)
    (limited / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1000}))
    engine = Engine.from_pretrained(limited)
    assert engine.model_info.max_tokens == V15["n_positions"]
    result = engine.embed(["word " * 400], truncate=True)
    assert result.token_counts.tolist() == [V15["n_positions"]]
    assert np.isfinite(result.embeddings).all()
