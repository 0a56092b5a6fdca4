"""Tiny random ColBERT models saved as PyLate saves them, and PyLate as the reference.

PyLate 1.6 pins sentence-transformers 5.3; under the 6.x the tests run with, three of its seams
broke, and `reference` mends exactly those (its encode code is PyLate's own):
- sentence-transformers 6 no longer writes `activation_function` in a Dense config and adds IO
  names PyLate's Dense refuses: the builder writes the Dense config as PyLate + 5.3 did;
- `ColBERT.save`/load read `_model_config`, which 6.x dropped: settings are passed explicitly;
- `Transformer.tokenize` ignores `padding="max_length"` and `max_seq_length` in 6.x (no query
  expansion, no cut): 5.3's tokenize (the tokenizer called with both) is put back.
"""

from __future__ import annotations

import importlib
import json
import shutil
import types
from pathlib import Path
from typing import Any

SETTINGS = (
    "query_prefix",
    "document_prefix",
    "query_length",
    "document_length",
    "attend_to_expansion_tokens",
    "skiplist_words",
    "do_query_expansion",
)


def build_colbert(
    out: Path,
    tokenizer_dir: Path,
    *,
    dimension: int = 16,
    query_length: int = 32,
    document_length: int = 64,
    attend_to_expansion_tokens: bool = False,
    architecture: str = "bert",
    seed: int = 0,
    shape: dict[str, int] | None = None,
) -> Path:
    """A random BertModel or ModernBertModel with the tokenizer's WordPiece, wrapped by
    pylate.models.ColBERT (which adds `[Q] `/`[D] ` to the vocabulary) and saved; returns the
    folder."""
    import torch
    import transformers
    from sentence_transformers.sentence_transformer.modules import Transformer

    from .tiny import _randomize, quiet

    models = quiet(importlib.import_module, "pylate.models")

    torch.manual_seed(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        **(shape or {}),
    }
    if architecture == "modernbert":  # the families test's ModernBERT on BERT's WordPiece
        config = transformers.ModernBertConfig(
            **shape,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id,
            # Half a window (32) covers a whole query: an expansion token attends to real tokens
            # as in every released ModernBERT ColBERT (window 128, queries of 32). With a window
            # smaller than the query, an expansion token far from the text sees no key at all, a
            # row transformers and our graph fill differently (both arbitrary); documents of 64
            # tokens still cross windows.
            local_attention=64,
            global_attn_every_n_layers=3,
        )
        model = transformers.ModernBertModel(config)
    else:
        model = transformers.BertModel(transformers.BertConfig(**shape))
    _randomize(model, seed, None)
    hf = out / "hf"
    model.save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    dense = models.Dense(in_features=shape_hidden(shape), out_features=dimension, bias=False)
    colbert = quiet(
        models.ColBERT,
        modules=[quiet(Transformer, str(hf)), dense],
        device="cpu",
        query_length=query_length,
        document_length=document_length,
        attend_to_expansion_tokens=attend_to_expansion_tokens,
    )
    object.__setattr__(colbert, "_model_config", colbert._get_model_config())
    folder = out / "colbert"
    quiet(colbert.save, str(folder))
    dense_config = folder / "1_Dense" / "config.json"
    raw = json.loads(dense_config.read_text())
    raw.setdefault("activation_function", "torch.nn.modules.linear.Identity")
    for key in ("module_input_name", "module_output_name"):
        raw.pop(key, None)
    dense_config.write_text(json.dumps(raw, indent=2))
    shutil.rmtree(hf)
    return folder


def shape_hidden(shape: dict[str, int] | None) -> int:
    return (shape or {}).get("hidden_size", 32)


def reference(folder: Path) -> Any:
    """pylate.models.ColBERT loaded from `folder`, with the seams above mended."""
    from pylate import models

    from .tiny import quiet

    if not hasattr(models.ColBERT, "_text_length"):
        models.ColBERT._text_length = lambda self, text: len(text)  # only orders batches
    settings = json.loads((folder / "config_sentence_transformers.json").read_text())
    model = quiet(
        models.ColBERT,
        str(folder),
        device="cpu",
        trust_remote_code=True,  # PyLate's Dense module class
        **{key: settings[key] for key in SETTINGS},
    )
    model[0].tokenize = types.MethodType(_tokenize_5_3, model[0])  # this model's only
    return model


def _tokenize_5_3(self: Any, texts: list[str], padding: Any = True, **_: Any) -> dict[str, Any]:
    return dict(
        self.tokenizer(
            texts,
            padding=padding,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="pt",
        )
    )
