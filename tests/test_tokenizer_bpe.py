"""SentencePiece-BPE (Llama, Mistral, Gemma) and byte-level BPE (Qwen2, Qwen3-Embedding) files
laid out as transformers 4 saved them (tests/support/bpe_tokenizers.py): token ids of the edge
texts, with and without special tokens, and of pairs, equal `AutoTokenizer.from_pretrained`'s
on transformers 5. The Llama layouts are where transformers 5's LlamaTokenizer builds another
pipeline than the file's; the others it takes as saved, which this pins down too."""

from __future__ import annotations

import pytest
from embedserve.pairs import PairTokenizer
from embedserve.tokenization import ModelTokenizer
from embedserve.tokenizer_pipeline import tokenizer_class

from .support import bpe_tokenizers as bpe
from .support.edge_texts import EDGE_QUERIES, EDGE_TEXTS

MAX = 512
# Special tokens inside the text: Prepend normalizes each piece between them, Metaspace "first"
# only the first, "always" each.
TEXTS = [*EDGE_TEXTS, " leading space", "a</s>b", "x<s> y", "<bos>after", "a<|im_end|> b"]

LLAMA, GEMMA, QWEN2 = bpe.LLAMA_CONFIG, bpe.GEMMA_CONFIG, bpe.QWEN2_CONFIG
# name -> (layout, tokenizer_config.json, model_type, whether transformers 5 rebuilds it)
CASES = {
    "llama2-legacy": ("llama-legacy", {**LLAMA, "legacy": True}, "llama", True),
    "llama2-legacy-unflagged": ("llama-legacy", {**LLAMA, "legacy": None}, "llama", True),
    "llama-metaspace": ("llama-metaspace", LLAMA, "llama", False),
    "llama-no-prefix-space": (
        "llama-metaspace",
        {**LLAMA, "add_prefix_space": False},
        "llama",
        True,
    ),
    # Mistral's registered class is the generic one: the file as saved, Llama class or not.
    "mistral-e5": (
        "llama-legacy",
        {**LLAMA, "legacy": True, "add_eos_token": True},
        "mistral",
        False,
    ),
    # A byte-level (Llama 3) file that names LlamaTokenizer: the generic class, as saved.
    "llama3-byte-level": (
        "qwen2",
        {**LLAMA, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": None},
        "llama",
        False,
    ),
    "gemma": ("gemma", GEMMA, "gemma3_text", False),
    "embeddinggemma-eos-flag": ("gemma", {**GEMMA, "add_eos_token": True}, "gemma3_text", False),
    "qwen2": ("qwen2", QWEN2, "qwen2", False),
    "qwen3-embedding": ("qwen3-embedding", QWEN2, "qwen3", False),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, reference) -> dict:
    corpus = reference["texts"][:300] + EDGE_TEXTS
    files = {
        "llama-legacy": bpe.llama(corpus, "llama-legacy"),
        "llama-metaspace": bpe.llama(corpus, "llama-metaspace"),
        "gemma": bpe.gemma(corpus),
        "qwen2": bpe.qwen2(corpus, "qwen2"),
        "qwen3-embedding": bpe.qwen2(corpus, "qwen3-embedding"),
    }
    root = tmp_path_factory.mktemp("bpe-tokenizers")
    return {
        name: bpe.write(root / name, files[layout], config, model_type)
        for name, (layout, config, model_type, _) in CASES.items()
    }


@pytest.fixture(scope="module")
def hf_tokenizers(folders) -> dict:
    import warnings

    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Llama-3-as-LlamaTokenizer case warns by design
        return {name: AutoTokenizer.from_pretrained(str(f)) for name, f in folders.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_ids_equal_transformers(name, folders, hf_tokenizers) -> None:
    hf, path = hf_tokenizers[name], folders[name] / "tokenizer.json"
    tokenizer = ModelTokenizer(path, MAX)
    content = tokenizer.content_ids(TEXTS)
    assert content == [hf(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    sequences = [
        tokenizer.model_sequence(i, ids, truncate=True, direction="right").tolist()
        for i, ids in enumerate(content)
    ]
    assert sequences == hf(TEXTS)["input_ids"]

    pairs = PairTokenizer(path, MAX)
    for query in EDGE_QUERIES:
        prepared = pairs.prepare(pairs.content_ids([query]) * len(TEXTS), pairs.content_ids(TEXTS))
        want = hf([query] * len(TEXTS), TEXTS)["input_ids"]
        assert [p.ids.tolist() for p in prepared.pairs] == want, query

    # The file as saved tokenizes some texts otherwise exactly where transformers rebuilds it.
    as_saved = ModelTokenizer(path, MAX, "as-saved").content_ids(TEXTS)
    assert (as_saved != content) == CASES[name][3]


def test_classes_as_auto_tokenizer_picks_them(folders, hf_tokenizers) -> None:
    import json

    for name, folder in folders.items():
        config = json.loads((folder / "tokenizer_config.json").read_text())
        picked = tokenizer_class(folder, config)
        loaded = type(hf_tokenizers[name]).__name__
        if loaded == "TokenizersBackend":
            # Generic, or named LlamaTokenizer over a byte-level file (the rebuild steps aside).
            assert picked is None or name == "llama3-byte-level", name
        else:
            assert picked == loaded, name
