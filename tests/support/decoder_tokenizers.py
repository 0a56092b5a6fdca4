"""all-MiniLM's WordPiece vocabulary dressed as a decoder's tokenizer (no BOS, padding on the
left), for the tiny decoder embedders and LLM rerankers built over it."""

from __future__ import annotations

import json
from pathlib import Path

EOS = 102  # the MiniLM vocabulary's [SEP], used as end-of-text

# A post-processor that appends the EOS and nothing else, as Qwen3-Embedding's does.
APPEND_EOS = {
    "type": "TemplateProcessing",
    "single": [
        {"Sequence": {"id": "A", "type_id": 0}},
        {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
    ],
    "pair": [
        {"Sequence": {"id": "A", "type_id": 0}},
        {"Sequence": {"id": "B", "type_id": 0}},
        {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
    ],
    "special_tokens": {"[SEP]": {"id": "[SEP]", "ids": [EOS], "tokens": ["[SEP]"]}},
}


def decoder_tokenizer(minilm_dir: Path, out: Path, *, max_length: int, append_eos: bool) -> Path:
    """`minilm_dir`'s tokenizer with a decoder's conventions: no BOS, padding on the left, and
    either the EOS appended by the post-processor (`append_eos`) or no special tokens at all."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads((minilm_dir / "tokenizer.json").read_text())
    tokenizer["post_processor"] = APPEND_EOS if append_eos else None
    tokenizer["padding"] = None
    tokenizer["truncation"] = None
    (out / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "padding_side": "left",
        **({"eos_token": "[SEP]"} if append_eos else {}),
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "model_max_length": max_length,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out
