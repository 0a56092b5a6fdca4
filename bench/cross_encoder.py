"""The benches' cross-encoder: ms-marco-MiniLM-L-6-v2's shape with a random head, and its queries.

No reranker checkpoint is downloadable here, and speed depends on the shape, not on the weights:
all-MiniLM-L6-v2's encoder (BertForSequenceClassification, 6 layers, 384 wide, limit 512) with a
random 1-logit head, built with transformers once and kept in the cache. `python -m bench rerank`,
`overload --task rerank` and `soak --rerank-share` all use it unless given another folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

RERANKER = "bench-reranker"  # the name the overload and soak benches serve it under
QUERIES = [
    "Can I link a proprietary program against the library?",
    "warranty disclaimer",
    "What must I include when I distribute copies of the source code?",
    "patent license termination",
]


def minilm_cross_encoder() -> Path:
    """A MiniLM-L6 cross-encoder folder (random head), built on first use."""
    from embedserve.models import resolve_model_dir
    from embedserve.models.cache import cache_root

    folder = cache_root() / "bench" / "minilm-l6-cross-encoder"
    if folder.is_dir():
        return folder
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = resolve_model_dir("all-MiniLM-L6-v2")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final place and renamed, so an interrupted build never looks complete.
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
        tokenizer = AutoTokenizer.from_pretrained(str(source), model_max_length=512)
        model.save_pretrained(str(building))
        tokenizer.save_pretrained(str(building))
        try:
            building.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process's build finishing first
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def model_flag(folder: Path | None) -> str:
    """`embedserve serve --model`'s value serving `folder` (default: the MiniLM-L6 one) as
    RERANKER."""
    return f"{folder or minilm_cross_encoder()}={RERANKER}"
