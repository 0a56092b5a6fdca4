"""Cross-encoders of the remote-code families: JinaBertForSequenceClassification (jina-reranker-v1)
and NewForSequenceClassification (gte-multilingual-reranker-base). Both heads are BERT's, as
their remote code writes them (jinaai/jina-bert-implementation ``modeling_bert.py``; as vendored
in xuhaike/SparseCL@9e7ad03e sparsecl/gte/modeling.py, NewForSequenceClassification over
NewModel(add_pooling_layer=True)): tanh(pooler.dense(first token)), then ``classifier``. The
encoders are the references of test_jina_bert.py and test_gte.py; pairs are tokenized as
CrossEncoder does (longest_first at the model's limit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedserve.reranker import Reranker

from tests.models import test_gte, test_jina_bert
from tests.support.cross_encoders import QUERIES
from tests.support.tiny import TOKENIZER_FILES, _randomize, quiet

MAX_LENGTH = 64

RERANKERS = {
    "jina_bert": (
        test_jina_bert,
        {**test_jina_bert.V2_BASE_EN, "architectures": ["JinaBertForSequenceClassification"]},
        "bert",
    ),
    "gte": (
        test_gte,
        {**test_gte.BASE_EN, "architectures": ["NewForSequenceClassification"]},
        "new",
    ),
}


def _cross_encoder(module: Any, config: dict[str, Any], prefix: str) -> Any:
    """``<Family>ForSequenceClassification``'s eval forward: the encoder under ``prefix``, its
    pooler on the first token, and a one-logit classifier."""
    import torch
    from torch import nn

    encoder = module._reference(config)
    hidden = encoder.hidden_size
    if not hasattr(encoder, "pooler"):
        encoder.pooler = nn.Module()
        encoder.pooler.dense = nn.Linear(hidden, hidden)

    class CrossEncoderModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            setattr(self, prefix, encoder)
            self.classifier = nn.Linear(hidden, 1)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            states = encoder(input_ids, attention_mask, token_type_ids)
            pooled = torch.tanh(encoder.pooler.dense(states[:, 0]))
            return self.classifier(pooled)[:, 0]

    return CrossEncoderModel()


@pytest.fixture(scope="module")
def documents(reference: dict) -> list[str]:
    return list(dict.fromkeys(reference["texts"][::8]))


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer_dir: Path, isolated_cache: None
) -> dict[str, tuple[Path, Any]]:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    out = {}
    for name, (module, config, prefix) in RERANKERS.items():
        model = _cross_encoder(module, config, prefix)
        _randomize(model, 0, None)
        model.eval()
        folder = tmp_path_factory.mktemp(name)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(folder / "model.safetensors"),
        )
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        for file in TOKENIZER_FILES:
            if (minilm_tokenizer_dir / file).exists():
                shutil.copyfile(minilm_tokenizer_dir / file, folder / file)
        tok = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**tok, "model_max_length": MAX_LENGTH})
        )
        out[name] = (folder, model)
    return out


def _reference_logits(
    model: Any, tokenizer_dir: Path, pairs: list[tuple[str, str]]
) -> tuple[np.ndarray, int]:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=MAX_LENGTH)
    with torch.no_grad():
        batch = tokenizer(
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            padding=True,
            truncation="longest_first",
            return_tensors="pt",
        )
        return model(**batch).numpy(), int(batch["input_ids"].shape[1])


@pytest.mark.parametrize("family", list(RERANKERS))
def test_remote_reranker_matches_reference(
    family: str, built: dict, documents: list[str], minilm_tokenizer_dir: Path
) -> None:
    folder, model = built[family]
    reranker = Reranker.from_pretrained(folder, max_batch_tokens=512)
    for query in QUERIES:
        pairs = [(query, doc) for doc in documents]
        want, width = quiet(_reference_logits, model, minilm_tokenizer_dir, pairs)
        assert width == MAX_LENGTH  # some pairs are cut at the limit
        got = reranker.score(pairs, raw_scores=True)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert np.std(got) > 0.01  # the random head separates documents
