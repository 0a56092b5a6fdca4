"""SentencePiece-BPE (Llama, Mistral, Gemma) and byte-level BPE (Qwen2) tokenizer files laid out
as transformers 4 saved them on the hub, over a small vocabulary trained here: the real files
are gated or hub-only, and what tells tokenizer pipelines apart is the layout (normalizer,
pre-tokenizer, post-processor, tokenizer_config.json flags), not the size of the vocabulary.

Layouts, after transformers 4's converters (convert_slow_tokenizer.py) and the files they wrote:
- "llama-legacy": Llama 2 / Mistral 7B v0.1: normalizer Prepend("▁") + Replace(" ", "▁"), no
  pre-tokenizer, BPE with byte fallback, post-processor "<s> $A" / "<s> $A <s> $B".
- "llama-metaspace": Llama files converted with legacy=False (transformers >= 4.36): no
  normalizer, Metaspace(prepend_scheme="first", split=False).
- "gemma": Gemma / Gemma 3: normalizer Replace(" ", "▁"), pre-tokenizer Split(" ",
  merged_with_previous), no prefix space, post-processor "<bos> $A".
- "qwen2": NFC, Split(Qwen2's regex) + ByteLevel without its own regex, post-processor
  ByteLevel; "qwen3-embedding" appends <|endoftext|> with a TemplateProcessing instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

BYTES = [f"<0x{b:02X}>" for b in range(256)]
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _spm_bpe(corpus: list[str], specials: list[str], prepend: str) -> dict[str, Any]:
    """A byte-fallback BPE trained over "▁"-joined words; an alphabet cut to 150 characters so
    that rare characters (CJK, emoji, scripts seen once) fall back to <0xNN> bytes."""
    tok = Tokenizer(models.BPE(unk_token=specials[-1] if "<unk>" in specials else None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    trainer = trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials + BYTES, limit_alphabet=150, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    raw = json.loads(tok.to_str())
    raw["added_tokens"] = [t for t in raw["added_tokens"] if t["content"] not in BYTES]
    for t in raw["added_tokens"]:
        t["normalized"] = False
    raw["model"].update(unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    raw["decoder"] = json.loads(
        decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        ).__getstate__()
    )
    return raw


def _template(single: str, pair: str, tokens: dict[str, int]) -> dict[str, Any]:
    processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(tokens.items())
    )
    return json.loads(processor.__getstate__())


def llama(corpus: list[str], layout: str) -> Tokenizer:
    raw = _spm_bpe(corpus, ["<unk>", "<s>", "</s>"], "always")
    ids = {t["content"]: t["id"] for t in raw["added_tokens"]}
    if layout == "llama-legacy":
        raw["normalizer"] = json.loads(
            normalizers.Sequence(
                [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
            ).__getstate__()
        )
        raw["pre_tokenizer"] = None
    else:
        raw["normalizer"] = None
        raw["pre_tokenizer"] = json.loads(
            pre_tokenizers.Metaspace(prepend_scheme="first", split=False).__getstate__()
        )
    raw["decoder"]["decoders"].append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    raw["post_processor"] = _template("<s>:0 $A:0", "<s>:0 $A:0 <s>:1 $B:1", {"<s>": ids["<s>"]})
    return Tokenizer.from_str(json.dumps(raw))


def gemma(corpus: list[str]) -> Tokenizer:
    raw = _spm_bpe(corpus, ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], "never")
    ids = {t["content"]: t["id"] for t in raw["added_tokens"]}
    raw["normalizer"] = json.loads(normalizers.Replace(" ", "▁").__getstate__())
    raw["pre_tokenizer"] = json.loads(
        pre_tokenizers.Split(" ", behavior="merged_with_previous").__getstate__()
    )
    raw["post_processor"] = _template(
        "<bos>:0 $A:0", "<bos>:0 $A:0 <bos>:1 $B:1", {"<bos>": ids["<bos>"]}
    )
    return Tokenizer.from_str(json.dumps(raw))


def qwen2(corpus: list[str], layout: str) -> Tokenizer:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    if layout == "qwen3-embedding":
        eos = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A:0 <|endoftext|>:0",
            pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
            special_tokens=[("<|endoftext|>", eos)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


# tokenizer_config.json as the hub folders have it (the fields that steer tokenization).
LLAMA_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": None,
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": False,
    "model_max_length": 4096,
}
GEMMA_CONFIG = {
    "tokenizer_class": "GemmaTokenizer",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "add_bos_token": True,
    "add_eos_token": False,
}
QWEN2_CONFIG = {
    "tokenizer_class": "Qwen2Tokenizer",
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "unk_token": None,
    "add_prefix_space": False,
    "errors": "replace",
    "split_special_tokens": False,
}


def write(folder: Path, tokenizer: Tokenizer, config: dict[str, Any], model_type: str) -> Path:
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder
