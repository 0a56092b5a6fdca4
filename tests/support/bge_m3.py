"""Tiny random BGE-M3 folders: an XLM-R checkpoint with FlagEmbedding's head files beside it
(`sparse_linear.pt`, `colbert_linear.pt`), as `BGEM3FlagModel` loads them. FlagEmbedding reads
the heads only when both files are there, so both are written (the ColBERT one for the task that
serves it)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .cross_encoders import XLMR_VOCAB, roberta_tokenizer, tiny_xlmr_config


def tiny_bge_m3(
    out: Path,
    texts: list[str],
    *,
    max_length: int = 64,
    colbert_dim: int = 32,
    seed: int = 11,
    tokenizer_dir: Path | None = None,
) -> Path:
    """XLMRobertaModel (hidden 32, 2 layers) with a byte-level BPE trained on `texts` (or XLM-R's
    own tokenizer files copied from `tokenizer_dir`, as BGE-M3 ships), and random sparse
    (hidden → 1) and ColBERT (hidden → `colbert_dim`) heads, saved with torch.save."""
    import torch
    from transformers import XLMRobertaModel

    tokenizer = None if tokenizer_dir is not None else roberta_tokenizer(texts, max_length)
    config = tiny_xlmr_config(XLMR_VOCAB if tokenizer is None else len(tokenizer), max_length)
    torch.manual_seed(seed)
    model = XLMRobertaModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embeddings" not in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(str(out))
    if tokenizer is None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_dir / name, out / name)  # type: ignore[operator]
    else:
        tokenizer.save_pretrained(str(out))
    sparse = torch.nn.Linear(32, 1)
    colbert = torch.nn.Linear(32, colbert_dim)
    with torch.no_grad():
        sparse.weight.normal_(0.0, 0.5)
        sparse.bias.fill_(0.1)
    torch.save(sparse.state_dict(), out / "sparse_linear.pt")
    torch.save(colbert.state_dict(), out / "colbert_linear.pt")
    return out
