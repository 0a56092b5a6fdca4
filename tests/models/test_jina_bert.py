"""JinaBERT (jina-embeddings-v2 base/small) against a PyTorch reference written from the public
ports of its remote code (jinaai/jina-bert-implementation's ``modeling_bert.py``, a MosaicBERT
derivative): huggingface/text-embeddings-inference at commit
0d124dc9773be6ac5a9a57d8439aba9bbbf33273, backends/candle/src/models/jina.rs (JinaEmbeddings,
JinaAttention, JinaBertLayer's GLU: act(first half) * second half, wo, layernorm) and
backends/candle/src/alibi.rs (alibi_head_slopes, build_alibi_tensor: -slope * |k - q| added
with the padding mask to the scaled scores), which backends/python/.../jinaBert_model.py
repeats in PyTorch (rebuild_alibi_tensor). jina-embeddings-v2-base-code's variant
(jinaai/jina-bert-v2-qk-post-norm) follows the same commit's jinaBert_model.py
(JinaBertSelfAttention's layer_norm_q / layer_norm_k, JinaBertLayer's layer_norm_1 / layer_norm_2,
JinaBertGLUMLP: up_gated_layer's first half times act(second half)) and jina_code.rs.

Folders carry jina-embeddings-v2-base-en's config.json fields (model_type "bert", auto_map to
jinaai/jina-bert-implementation, position_embedding_type "alibi", feed_forward_type "geglu")
and tensor names; embedserve never runs that code, it compiles the weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from embedserve.models.architectures import family_for
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError

from tests.models.test_families import N_TEXTS, _check
from tests.support.remote_code import (
    Built,
    build_variants,
    check_precision_floor,
    edited_copy,
    mixed_texts,
)
from tests.support.tiny import rewrite

AUTO_MAP = {
    "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
    "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
    "AutoModelForMaskedLM": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForMaskedLM",
    "AutoModelForSequenceClassification": "jinaai/jina-bert-implementation--modeling_bert.JinaBertForSequenceClassification",
}
# jina-embeddings-v2-base-en's config.json, shrunk: same fields, tiny sizes.
V2_BASE_EN = {
    "_name_or_path": "jinaai/jina-bert-implementation",
    "architectures": ["JinaBertForMaskedLM"],
    "attention_probs_dropout_prob": 0.0,
    "attn_implementation": None,
    "auto_map": AUTO_MAP,
    "classifier_dropout": None,
    "emb_pooler": "mean",
    "feed_forward_type": "geglu",
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 48,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 8192,
    "model_max_length": 8192,
    "model_type": "bert",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "position_embedding_type": "alibi",
    "torch_dtype": "float32",
    "transformers_version": "4.26.0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30528,
}

VARIANTS: dict[str, dict[str, Any]] = {
    # jina-embeddings-v2-base-en as shipped: GeGLU, ALiBi, mean + Normalize.
    "v2-base-en": {"config": {}, "pooling": "mean", "normalize": True, "max_seq_length": 64},
    # 6 heads (not a power of two: ALiBi's interleaved slopes), ReGLU, CLS pooling.
    "six-heads-reglu": {
        "config": {"hidden_size": 48, "num_attention_heads": 6, "feed_forward_type": "reglu"},
        "pooling": "cls",
        "normalize": False,
        "max_seq_length": 48,
    },
    # jina-embeddings-v2-base-code: q/k LayerNorms, layer_norm_1/2, up_gated_layer/down_layer.
    "v2-base-code": {
        "config": {
            "_name_or_path": "jinaai/jina-bert-v2-qk-post-norm",
            "auto_map": {
                k: v.replace("jina-bert-implementation", "jina-bert-v2-qk-post-norm")
                for k, v in AUTO_MAP.items()
            },
            "vocab_size": 30528,
        },
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 56,
    },
    # JinaBertConfig's default feed-forward: BERT's intermediate/output, still with ALiBi.
    "original-ffn": {
        "config": {"feed_forward_type": "original"},
        "pooling": "mean",
        "normalize": True,
        "max_seq_length": 40,
    },
}


def _slopes(n: int) -> list[float]:
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: n - closest]


def _reference(config: dict[str, Any]) -> Any:
    """JinaBertModel's forward (eval), parameters named as its state dict."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = hidden // heads
    inner = config["intermediate_size"]
    eps = config["layer_norm_eps"]
    ff = config["feed_forward_type"]
    qk = "qk-post-norm" in json.dumps(config["auto_map"])

    def act(x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if ff == "reglu" else F.gelu(x)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Module()
            self.attention.self = nn.Module()
            for name in ("query", "key", "value"):
                setattr(self.attention.self, name, nn.Linear(hidden, hidden))
            if qk:
                self.attention.self.layer_norm_q = nn.LayerNorm(hidden, eps=eps)
                self.attention.self.layer_norm_k = nn.LayerNorm(hidden, eps=eps)
                self.layer_norm_1 = nn.LayerNorm(hidden, eps=eps)
                self.layer_norm_2 = nn.LayerNorm(hidden, eps=eps)
            self.attention.output = nn.Module()
            self.attention.output.dense = nn.Linear(hidden, hidden)
            self.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)
            if qk:
                self.mlp = nn.Module()
                self.mlp.up_gated_layer = nn.Linear(hidden, 2 * inner, bias=False)
                self.mlp.down_layer = nn.Linear(inner, hidden)
            elif ff == "original":
                self.intermediate = nn.Module()
                self.intermediate.dense = nn.Linear(hidden, inner)
                self.output = nn.Module()
                self.output.dense = nn.Linear(inner, hidden)
                self.output.LayerNorm = nn.LayerNorm(hidden, eps=eps)
            else:
                self.mlp = nn.Module()
                self.mlp.gated_layers = nn.Linear(hidden, 2 * inner, bias=False)
                self.mlp.wo = nn.Linear(inner, hidden)
                self.mlp.layernorm = nn.LayerNorm(hidden, eps=eps)

    class Model(nn.Module):
        hidden_size = hidden

        def __init__(self) -> None:
            super().__init__()
            self.embeddings = nn.Module()
            self.embeddings.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            self.embeddings.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
            self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))
            self.pooler = nn.Module()  # in the checkpoint, unused by embeddings
            self.pooler.dense = nn.Linear(hidden, hidden)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            batch, seqlen = input_ids.shape
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = self.embeddings.word_embeddings(input_ids)
            x = self.embeddings.LayerNorm(x + self.embeddings.token_type_embeddings(token_type_ids))
            mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            positions = torch.arange(seqlen)
            distance = (positions[None, :] - positions[:, None]).abs()
            slopes = torch.tensor(_slopes(heads)) * -1
            bias = mask + (slopes[:, None, None] * distance)[None]
            for layer in self.encoder.layer:
                s = layer.attention.self
                q, k, v = s.query(x), s.key(x), s.value(x)
                if qk:
                    q, k = s.layer_norm_q(q), s.layer_norm_k(k)
                q, k, v = (
                    t.view(batch, seqlen, heads, head_dim).transpose(1, 2) for t in (q, k, v)
                )
                scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
                context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seqlen, hidden)
                out = layer.attention.output
                if qk:
                    x = layer.layer_norm_1(out.LayerNorm(out.dense(context) + x) + x)
                    h = layer.mlp.up_gated_layer(x)
                    h = h[..., :inner] * act(h[..., inner:])
                    x = layer.layer_norm_2(layer.mlp.down_layer(h) + x)
                    continue
                x = out.LayerNorm(out.dense(context) + x)
                if ff == "original":
                    h = layer.output.dense(F.gelu(layer.intermediate.dense(x)))
                    x = layer.output.LayerNorm(h + x)
                else:
                    h = layer.mlp.gated_layers(x)
                    h = act(h[..., :inner]) * h[..., inner:]
                    x = layer.mlp.layernorm(layer.mlp.wo(h) + x)
            return x

    return Model()


@pytest.fixture(scope="module")
def texts(reference: dict) -> list[str]:
    return mixed_texts(reference, N_TEXTS)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer_dir: Path, isolated_cache: None
) -> dict[str, Built]:
    tokenizers = {"minilm": minilm_tokenizer_dir}
    return build_variants(tmp_path_factory, VARIANTS, V2_BASE_EN, _reference, tokenizers)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_jina_bert_matches_reference(variant: str, built: dict, texts: list[str]) -> None:
    want, counts = built[variant].want(texts)
    assert len(set(counts.tolist())) >= 10
    assert counts.max() == VARIANTS[variant]["max_seq_length"]
    _check(built[variant].folder, texts, want, counts)


def test_jina_bert_prefixed_checkpoint(built: dict, texts: list[str], tmp_path: Path) -> None:
    """The same weights saved from JinaBertForMaskedLM, under "bert."."""
    want, counts = built["v2-base-en"].want(texts)
    _check(
        rewrite(built["v2-base-en"].folder, tmp_path / "prefixed", prefix="bert."),
        texts,
        want,
        counts,
    )


def test_jina_is_claimed_from_model_type_bert(built: dict) -> None:
    """config.json says model_type "bert": the remote code, the class or ALiBi says JinaBERT."""
    folder = built["v2-base-en"].folder
    raw = json.loads((folder / "config.json").read_text())
    assert family_for(HFConfig(raw, folder)).name == "jina_bert"
    bare = {k: v for k, v in raw.items() if k not in ("auto_map", "architectures")}
    assert family_for(HFConfig(bare, folder)).name == "jina_bert"  # by ALiBi
    plain = {**bare, "position_embedding_type": "absolute", "architectures": ["BertModel"]}
    assert family_for(HFConfig(plain, folder)).name == "bert"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_jina_precisions_hold_their_floors(precision: str, built: dict, texts: list[str]) -> None:
    check_precision_floor(built["v2-base-en"], texts, precision)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            {
                "auto_map": {
                    "AutoModel": "jinaai/jina-bert-v2-qk-post-norm--modeling_bert.JinaBertModel"
                },
                "feed_forward_type": "original",
            },
            "jina-bert-v2-qk-post-norm",
        ),
        ({"feed_forward_type": "swiglu"}, "feed_forward_type"),
    ],
)
def test_jina_refuses_what_it_does_not_compile(
    edit: dict, field: str, built: dict, tmp_path: Path
) -> None:
    from embedserve.models.compiler import build_model

    folder = edited_copy(built["v2-base-en"].folder, edit, tmp_path / "edited")
    with pytest.raises(UnsupportedArchitectureError, match=field):
        build_model(folder)
