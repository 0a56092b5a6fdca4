"""Vectors of the new decoder families over their own hub-style tokenizer files, as published
(tests/support/bpe_tokenizers.py: laid out as transformers 4 saved them, not re-saved): a tiny
random Llama over a Llama 2 file, Mistral over the same (e5-mistral), Gemma 3 over Gemma's,
Qwen3 over Qwen3-Embedding's; sentence-transformers loads each folder as it would from the hub
(transformers 5 picks and rebuilds the tokenizer), embedserve loads the same folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from embedserve.engine import Engine

from tests.support import bpe_tokenizers as bpe
from tests.support.edge_texts import EDGE_QUERIES, EDGE_TEXTS
from tests.support.tiny import quiet

COSINE = 0.9999
MAX_SEQ = 48
PROMPTS = {"query": "Instruct: Retrieve passages\nQuery: ", "document": ""}
SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 128,
}
# Llama 2 ships no pad token; embedders built on it (e5-mistral) name </s>.
LLAMA = {**bpe.LLAMA_CONFIG, "legacy": True, "pad_token": "</s>"}
# family -> (transformers config class, extra config, tokenizer layout, tokenizer_config, pooling)
CASES = {
    "llama": ("LlamaConfig", {}, "llama-legacy", LLAMA, "lasttoken"),
    "mistral": (
        "MistralConfig",
        {"sliding_window": 8},
        "llama-legacy",
        {**LLAMA, "add_eos_token": True},
        "lasttoken",
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        {"use_bidirectional_attention": True, "sliding_window": 8, "query_pre_attn_scalar": 8},
        "gemma",
        bpe.GEMMA_CONFIG,
        "mean",
    ),
    "qwen3": ("Qwen3Config", {}, "qwen3-embedding", bpe.QWEN2_CONFIG, "lasttoken"),
}


def _tokenizer(layout: str, corpus: list[str]):
    if layout.startswith("llama"):
        return bpe.llama(corpus, layout)
    return bpe.gemma(corpus) if layout == "gemma" else bpe.qwen2(corpus, layout)


def _build(root: Path, family: str, corpus: list[str]) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    config_class, extra, layout, tokenizer_config, pooling = CASES[family]
    original = bpe.write(root / "tokenizer", _tokenizer(layout, corpus), tokenizer_config, family)
    vocab = json.loads((original / "tokenizer.json").read_text())
    size = max(t["id"] for t in vocab["added_tokens"]) + 1
    size = max(size, len(vocab["model"]["vocab"]))
    config = getattr(transformers, config_class)(vocab_size=size, **SIZES, **extra)
    torch.manual_seed(11)
    model = transformers.AutoModel.from_config(config).eval()
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * 0.2
            p.copy_(1.0 + 0.5 * noise if "norm" in name and "gemma" not in family else noise)
    hf = root / "hf"
    model.save_pretrained(hf)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(original / name, hf / name)
    transformer = Transformer(str(hf), max_seq_length=MAX_SEQ)
    st = SentenceTransformer(
        modules=[transformer, Pooling(32, pooling_mode=pooling), Normalize()],
        prompts=PROMPTS,
        device="cpu",
    )
    st.save(str(root / "st"))
    # sentence-transformers re-saved the tokenizer as transformers 5 built it: put the
    # published files back, so both sides start from them.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(original / name, root / "st" / name)
    return root / "st"


@pytest.mark.parametrize("prompt_name", ["query", "document"])
@pytest.mark.parametrize("family", list(CASES))
def test_vectors_over_published_tokenizer_files(
    family, prompt_name, tmp_path, reference, isolated_cache
) -> None:
    from sentence_transformers import SentenceTransformer

    corpus = reference["texts"][:300] + EDGE_TEXTS
    folder = quiet(_build, tmp_path, family, corpus)
    texts = [*EDGE_TEXTS, *EDGE_QUERIES, *reference["texts"][-8:]]
    st = quiet(SentenceTransformer, str(folder), device="cpu")
    with torch.no_grad():
        want = quiet(st.encode, texts, batch_size=8, prompt_name=prompt_name)
    counts = st.tokenize([PROMPTS[prompt_name] + t for t in texts])["attention_mask"].sum(1)
    got = Engine.from_pretrained(folder).embed(texts, prompt_name=prompt_name)
    assert got.token_counts.tolist() == counts.tolist()
    a, b = got.embeddings.astype(np.float64), np.asarray(want, dtype=np.float64)
    cosines = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE, (family, repr(texts[worst]), cosines.min())
