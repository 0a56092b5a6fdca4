"""Alibaba GTE ("new": gte-base-en-v1.5, gte-multilingual-base) against a PyTorch reference
written from its remote code, Alibaba-NLP/new-impl's ``modeling.py``, as vendored verbatim in
xuhaike/SparseCL at sparsecl/gte/modeling.py, commit 9e7ad03e7357580bc80d9012351e570b4566f6a2:
NewEmbeddings (padded path), RotaryEmbedding / NTKScalingRotaryEmbedding, NewAttention._attention,
NewGatedMLP, NewLayer, RMSNorm and NewModel.forward (unpad_inputs only changes how the same
attention is computed).

Folders carry the hub configs' fields (auto_map to Alibaba-NLP/new-impl) and tensor names;
embedserve never runs that code, it compiles the weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from embedserve.models.hf_config import UnsupportedArchitectureError

from tests.models.test_families import N_TEXTS, _check
from tests.support.remote_code import (
    Built,
    build_variants,
    check_precision_floor,
    edited_copy,
    mixed_texts,
)

AUTO_MAP = {
    "AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
    "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel",
    "AutoModelForMaskedLM": "Alibaba-NLP/new-impl--modeling.NewForMaskedLM",
    "AutoModelForMultipleChoice": "Alibaba-NLP/new-impl--modeling.NewForMultipleChoice",
    "AutoModelForQuestionAnswering": "Alibaba-NLP/new-impl--modeling.NewForQuestionAnswering",
    "AutoModelForSequenceClassification": "Alibaba-NLP/new-impl--modeling.NewForSequenceClassification",
    "AutoModelForTokenClassification": "Alibaba-NLP/new-impl--modeling.NewForTokenClassification",
}
# gte-base-en-v1.5's config.json, shrunk: same fields, tiny sizes.
BASE_EN = {
    "_name_or_path": "Alibaba-NLP/gte-base-en-v1.5",
    "architectures": ["NewModel"],
    "attention_probs_dropout_prob": 0.0,
    "auto_map": AUTO_MAP,
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "layer_norm_eps": 1e-12,
    "layer_norm_type": "layer_norm",
    "logn_attention_clip1": False,
    "logn_attention_scale": False,
    "max_position_embeddings": 128,
    "model_type": "new",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pack_qkv": True,
    "pad_token_id": 0,
    "position_embedding_type": "rope",
    "rope_scaling": {"factor": 2.0, "type": "ntk"},
    "rope_theta": 500000,
    "torch_dtype": "float32",
    "transformers_version": "4.39.1",
    "type_vocab_size": 0,
    "unpad_inputs": False,
    "use_memory_efficient_attention": False,
    "vocab_size": 30528,
}

VARIANTS: dict[str, dict[str, Any]] = {
    # gte-base-en-v1.5: BERT vocabulary, CLS pooling, no Normalize module.
    "base-en-v1.5": {
        "config": {},
        "tokenizer": "minilm",
        "pooling": "cls",
        "normalize": False,
        "max_seq_length": 48,
    },
    # gte-multilingual-base: XLM-R vocabulary, one token type, NTK factor 8, CLS + Normalize.
    "multilingual-base": {
        "config": {
            "_name_or_path": "Alibaba-NLP/gte-multilingual-base",
            "rope_theta": 160000,
            "rope_scaling": {"factor": 8.0, "type": "ntk"},
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "vocab_size": 250048,
            "unpad_inputs": True,
            "use_memory_efficient_attention": True,
        },
        "tokenizer": "xlmr",
        "pooling": "cls",
        "normalize": True,
        "max_seq_length": 64,
    },
    # The other switches: RMSNorm layers, separate q/k/v, mixed NTK, two token types, SiLU.
    "rms-unpacked-mixed-ntk": {
        "config": {
            "layer_norm_type": "rms_norm",
            "pack_qkv": False,
            "rope_scaling": {"factor": 4.0, "type": "ntk", "mixed_b": 0.7},
            "rope_theta": 10000,
            "type_vocab_size": 2,
            "hidden_act": "silu",
        },
        "tokenizer": "minilm",
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 40,
    },
    # BERT-style learned positions instead of rotary.
    "absolute": {
        "config": {"position_embedding_type": "absolute", "rope_scaling": None},
        "tokenizer": "minilm",
        "pooling": "mean",
        "normalize": False,
        "max_seq_length": 48,
    },
}


def _reference(config: dict[str, Any]) -> Any:
    """NewModel's padded forward (eval), parameters named as its state dict."""
    import torch
    from torch import nn
    from transformers.activations import ACT2FN

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads
    inner = config["intermediate_size"]
    eps = config["layer_norm_eps"]
    act = ACT2FN[config["hidden_act"]]
    rope = config["position_embedding_type"] == "rope"

    class RMSNorm(nn.Module):
        def __init__(self, size: int, eps: float) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(size))
            self.variance_epsilon = eps

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            variance = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    def norm() -> nn.Module:
        if config["layer_norm_type"] == "rms_norm":
            return RMSNorm(hidden, eps)
        return nn.LayerNorm(hidden, eps=eps)

    def inv_freqs() -> torch.Tensor:
        base = float(config["rope_theta"])
        scaling = config.get("rope_scaling")
        mixed_b = scaling.get("mixed_b") if scaling else None
        if scaling and mixed_b is None:
            base *= scaling["factor"]
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        if scaling and mixed_b is None:
            inv = inv / scaling["factor"] ** (2 / head_dim)
        elif scaling:
            a = torch.tensor(scaling["factor"]).log() / (head_dim / 2) ** mixed_b
            inv = inv / (a * torch.arange(1, head_dim // 2 + 1).float() ** mixed_b).exp()
        return inv

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Module()
            if config["pack_qkv"]:
                self.attention.qkv_proj = nn.Linear(hidden, 3 * hidden)
            else:
                self.attention.q_proj = nn.Linear(hidden, hidden)
                self.attention.k_proj = nn.Linear(hidden, hidden)
                self.attention.v_proj = nn.Linear(hidden, hidden)
            self.attention.o_proj = nn.Linear(hidden, hidden)
            self.mlp = nn.Module()
            self.mlp.up_gate_proj = nn.Linear(hidden, 2 * inner, bias=False)
            self.mlp.down_proj = nn.Linear(inner, hidden)
            self.attn_ln = norm()
            self.mlp_ln = norm()

    class Model(nn.Module):
        hidden_size = hidden

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            if not rope:
                self.embeddings.position_embeddings = nn.Embedding(
                    config["max_position_embeddings"], hidden
                )
            if config["type_vocab_size"] > 0:
                self.embeddings.token_type_embeddings = nn.Embedding(
                    config["type_vocab_size"], hidden
                )
            self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            batch, seqlen = input_ids.shape
            position_ids = torch.arange(seqlen).expand(batch, -1)
            x = self.embeddings.word_embeddings(input_ids)
            if rope:
                freqs = torch.outer(torch.arange(seqlen, dtype=torch.float32), inv_freqs())
                emb = torch.cat((freqs, freqs), dim=-1)
                cos = emb.cos()[position_ids].unsqueeze(2)  # [batch, seq, 1, dim]
                sin = emb.sin()[position_ids].unsqueeze(2)
            if config["type_vocab_size"] > 0:
                if token_type_ids is None:
                    token_type_ids = position_ids.mul(0)
                x = x + self.embeddings.token_type_embeddings(token_type_ids)
            if not rope:
                x = x + self.embeddings.position_embeddings(position_ids)
            x = self.embeddings.LayerNorm(x)
            bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            for layer in self.encoder.layer:
                a = layer.attention
                if config["pack_qkv"]:
                    q, k, v = a.qkv_proj(x).split(hidden, dim=-1)
                else:
                    q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
                q, k, v = (t.view(batch, seqlen, heads, head_dim) for t in (q, k, v))
                if rope:
                    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
                q, k, v = (t.transpose(1, 2) for t in (q, k, v))
                scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
                context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).reshape(batch, seqlen, -1)
                x = layer.attn_ln(x + a.o_proj(context))
                up, gate = layer.mlp.up_gate_proj(x).split(inner, dim=-1)
                x = layer.mlp_ln(x + layer.mlp.down_proj(act(gate) * up))
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
    return build_variants(tmp_path_factory, VARIANTS, BASE_EN, _reference, tokenizers)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gte_matches_reference(variant: str, built: dict, texts: list[str]) -> None:
    want, counts = built[variant].want(texts)
    assert len(set(counts.tolist())) >= 10
    assert counts.max() == VARIANTS[variant]["max_seq_length"]
    _check(built[variant].folder, texts, want, counts)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gte_precisions_hold_their_floors(precision: str, built: dict, texts: list[str]) -> None:
    check_precision_floor(built["base-en-v1.5"], texts, precision)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"logn_attention_scale": True}, "logn_attention_scale"),
        ({"layer_norm_type": "batch_norm"}, "layer_norm_type"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_type"),
    ],
)
def test_gte_refuses_what_it_does_not_compile(
    edit: dict, field: str, built: dict, tmp_path: Path
) -> None:
    from embedserve.models.compiler import build_model

    folder = edited_copy(built["base-en-v1.5"].folder, edit, tmp_path / "edited")
    with pytest.raises(UnsupportedArchitectureError, match=field):
        build_model(folder)
