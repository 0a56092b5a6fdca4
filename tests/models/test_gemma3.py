"""Gemma 3 text models as EmbeddingGemma packages them: a tiny random Gemma3TextModel
(bidirectional attention, sliding-window layers between global ones, GQA, q/k norms,
query_pre_attn_scalar ≠ head_dim) under Transformer → mean Pooling → Dense → Dense →
Normalize with EmbeddingGemma's prompts; against sentence-transformers on real texts of mixed
lengths (some cut at the limit) and the edge texts. A causal variant (Gemma 3 as an LM) sets
attn_logit_softcapping, which transformers' Gemma 3 reads in no layer, in eager attention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from embedserve.engine import Engine

from tests.support.edge_texts import EDGE_TEXTS
from tests.support.tiny import Recipe, build, quiet, rewrite

COSINE = 0.99999
MAX_SEQ = 48

# EmbeddingGemma's config_sentence_transformers.json prompts (a selection).
PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "Clustering": "task: clustering | query: ",
}

CONFIG = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "query_pre_attn_scalar": 12,
    "max_position_embeddings": 128,
    "pad_token_id": 0,
    # Windows of 8: bidirectional layers see 4 tokens either side, causal ones the last 8.
    "sliding_window": 8,
    "layer_types": [
        "sliding_attention",
        "sliding_attention",
        "full_attention",
        "sliding_attention",
    ],
    # Bases other than Gemma's defaults, so that a config whose bases are not read fails.
    "rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 50_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
    },
}

VARIANTS = {
    "embeddinggemma": {"use_bidirectional_attention": True},
    "causal": {"use_bidirectional_attention": False, "attn_logit_softcapping": 2.0},
}


def _build(tmp: Path, tokenizer_dir: Path, variant: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    recipe = Recipe(
        variant,
        "gemma3_text",
        {**CONFIG, **VARIANTS[variant]},
        pooling="mean",
        normalize=False,
        max_seq_length=MAX_SEQ,
    )
    _, base = build(recipe, tokenizer_dir, tmp / "base")
    torch.manual_seed(3)
    modules = [
        base[0],
        base[1],
        Dense(32, 64, bias=False, activation_function=torch.nn.Identity()),
        Dense(64, 32, bias=False, activation_function=torch.nn.Identity()),
        Normalize(),
    ]
    st = SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").eval()
    st.save(str(tmp / "st"))
    # Eager attention is the one implementation that could apply a soft cap (it takes one).
    st[0].auto_model.set_attn_implementation("eager")
    return tmp / "st", st


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    return reference["texts"][:12] + reference["texts"][-12:] + EDGE_TEXTS


@pytest.fixture(scope="module")
def built(tmp_path_factory, minilm_dir, isolated_cache) -> dict:
    return {v: quiet(_build, tmp_path_factory.mktemp(v), minilm_dir, v) for v in VARIANTS}


def _check(folder: Path, st, texts: list[str], prompt_name: str) -> None:
    with torch.no_grad():
        want = quiet(st.encode, texts, batch_size=8, prompt_name=prompt_name)
    counts = st.tokenize([PROMPTS[prompt_name] + t for t in texts])["attention_mask"].sum(1)

    engine = Engine.from_pretrained(folder)
    got = engine.embed(texts, prompt_name=prompt_name)
    assert got.token_counts.tolist() == counts.tolist()
    assert counts.max() == MAX_SEQ, "some texts are truncated"
    a, b = got.embeddings.astype(np.float64), np.asarray(want, dtype=np.float64)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE, (texts[worst][:40], cosines.min())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_gemma3_matches_sentence_transformers(variant, prompt_name, texts, built) -> None:
    folder, st = built[variant]
    _check(folder, st, texts, prompt_name)


def test_gemma3_4x_config(texts, built, tmp_path) -> None:
    """EmbeddingGemma's config.json as published (transformers 4.x): rope_theta for the global
    layers and rope_local_base_freq for the sliding ones instead of rope_parameters."""
    folder, st = built["embeddinggemma"]
    legacy = rewrite(
        folder,
        tmp_path / "legacy",
        config={"rope_theta": 50_000.0, "rope_local_base_freq": 500.0},
        drop=("rope_parameters",),
    )
    _check(legacy, st, texts, "query")


def test_gemma3_fp16_option(texts, built) -> None:
    """The fp16 graph pass takes the Gemma 3 graph (on x86 ONNX Runtime runs much of it in
    float32 behind casts, so this checks the option works, not fp16 kernels' rounding)."""
    folder, _ = built["embeddinggemma"]
    want = Engine.from_pretrained(folder).embed(texts, prompt_name="query").embeddings
    got = Engine.from_pretrained(folder, precision="fp16").embed(texts, prompt_name="query")
    a, b = got.embeddings.astype(np.float64), want.astype(np.float64)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosines.min() >= 0.9999
