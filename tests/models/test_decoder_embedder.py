"""Decoder embedders as Qwen3-Embedding and e5-mistral are packaged: a tiny random Qwen3,
Mistral (sliding window) or Llama (llama3 rope scaling), all GQA and causal, a tokenizer that
pads on the LEFT and whose post-processor appends an EOS, last-token pooling, and an
instruction prompt from config_sentence_transformers.json; against sentence-transformers on
real texts of mixed lengths (some cut at the limit) and the edge texts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from embedserve.engine import Engine
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

from tests.support.decoder_tokenizers import EOS, decoder_tokenizer
from tests.support.edge_texts import EDGE_TEXTS

COSINE = 0.9999
MAX_SEQ = 48
PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "document": "",
}


SIZES = {
    "vocab_size": 30522,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-6,
}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
CONFIGS = {
    "qwen3": lambda: transformers.Qwen3Config(**SIZES, rope_theta=10000.0),
    "mistral": lambda: transformers.MistralConfig(**SIZES, rope_theta=10000.0, sliding_window=8),
    "llama": lambda: transformers.LlamaConfig(**SIZES, rope_parameters=LLAMA3_ROPE),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def decoder_folder(request, tmp_path_factory, minilm_dir, isolated_cache) -> Path:
    root = tmp_path_factory.mktemp(f"{request.param}-embedder")
    tokenizer_dir = decoder_tokenizer(
        minilm_dir, root / "tokenizer", max_length=MAX_SEQ, append_eos=True
    )
    torch.manual_seed(7)
    model = transformers.AutoModel.from_config(CONFIGS[request.param]()).eval()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a trained-looking scale: init's std 0.02 makes attention near uniform
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * 0.2
            p.copy_(1.0 + 0.5 * noise if "norm" in name else noise)
    model.save_pretrained(root / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, root / "hf" / name)
    transformer = Transformer(
        str(root / "hf"), max_seq_length=MAX_SEQ, tokenizer_name_or_path=str(tokenizer_dir)
    )
    assert transformer.tokenizer.padding_side == "left"
    st = SentenceTransformer(
        modules=[transformer, Pooling(32, pooling_mode="lasttoken"), Normalize()],
        prompts=PROMPTS,
        device="cpu",
    )
    st.save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    return reference["texts"][:16] + reference["texts"][-16:] + EDGE_TEXTS


@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_decoder_embedder_matches_sentence_transformers(decoder_folder, texts, prompt_name):
    st = SentenceTransformer(str(decoder_folder), device="cpu")
    assert st.tokenizer.padding_side == "left"
    want = st.encode(texts, batch_size=8, prompt_name=prompt_name, convert_to_numpy=True)
    prompt = PROMPTS[prompt_name]
    want_counts = st.tokenize([prompt + t for t in texts])["attention_mask"].sum(1).numpy()

    engine = Engine.from_pretrained(decoder_folder)
    assert engine.model_info.pooling == "last"
    result = engine.embed(texts, prompt_name=prompt_name)
    np.testing.assert_array_equal(result.token_counts, want_counts)
    assert max(want_counts) == MAX_SEQ, "some texts are truncated, so batches pad"
    got, ref = result.embeddings.astype(np.float64), want.astype(np.float64)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= COSINE, f"worst cosine {cos.min():.7f} at text {int(cos.argmin())}"
    # Every sequence ends in the EOS, even the truncated ones, and starts with no BOS.
    sequences = engine.prepare(texts, prompt_name=prompt_name).sequences
    assert all(s[-1] == EOS for s in sequences)
    assert all(s[0] != 101 for s in sequences)


def test_decoder_fp16_option(decoder_folder, texts):
    """The fp16 graph pass takes each decoder graph (x86 ONNX Runtime runs much of it in
    float32 behind casts: this checks the option, not fp16 kernels' rounding)."""
    want = Engine.from_pretrained(decoder_folder).embed(texts, prompt_name="query").embeddings
    got = Engine.from_pretrained(decoder_folder, precision="fp16").embed(texts, prompt_name="query")
    a, b = got.embeddings.astype(np.float64), want.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= COSINE, f"worst cosine {cos.min():.7f} at text {int(cos.argmin())}"
