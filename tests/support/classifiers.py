"""Tiny random-weight sequence classifiers: the cross-encoder folders of `cross_encoders` with
named labels and, where asked, transformers' `problem_type` in config.json."""

from __future__ import annotations

import json
from pathlib import Path

from . import cross_encoders as ce

# Label names that are not transformers' LABEL_i defaults, so a test sees they are read.
NAMES = ["joy", "anger", "fear", "surprise", "neutral"]


def name_labels(folder: Path, problem_type: str | None = None) -> Path:
    """Give `folder`'s head the first num_labels of NAMES (and `problem_type`, if any)."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    count = len(config.get("id2label") or {}) or 2  # transformers 5 leaves out two labels
    names = NAMES[:count] if count > 1 else ["relevant"]
    config["id2label"] = {str(i): name for i, name in enumerate(names)}
    config["label2id"] = {name: i for i, name in enumerate(names)}
    if problem_type is not None:
        config["problem_type"] = problem_type
    path.write_text(json.dumps(config, indent=2))
    return folder


def classifier_dirs(root: Path, minilm_dir: Path, texts: list[str]) -> dict[str, Path]:
    """BERT with 1, 3 and 3 multi-label heads, XLM-R with 2 and 5 labels, DistilBERT with 5 and
    ModernBERT with 2, all labels named."""
    return {
        "bert1": name_labels(ce.bert_cross_encoder(root / "bert1", minilm_dir, seed=11)),
        "bert3": name_labels(
            ce.bert_cross_encoder(root / "bert3", minilm_dir, num_labels=3, seed=12)
        ),
        "bert3_multi": name_labels(
            ce.bert_cross_encoder(root / "bert3m", minilm_dir, num_labels=3, seed=13),
            "multi_label_classification",
        ),
        "xlmr2": name_labels(ce.xlm_roberta_cross_encoder(root / "xlmr2", texts, num_labels=2)),
        "xlmr5": name_labels(
            ce.xlm_roberta_cross_encoder(root / "xlmr5", texts, num_labels=5, seed=14)
        ),
        "distilbert5": name_labels(
            ce.distilbert_cross_encoder(root / "distilbert5", minilm_dir, num_labels=5, seed=15)
        ),
        "modernbert2": name_labels(
            ce.modernbert_cross_encoder(root / "modernbert2", minilm_dir, num_labels=2, seed=16)
        ),
    }
