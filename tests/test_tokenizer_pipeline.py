"""tokenizer.json read as transformers 5 (so sentence-transformers 5+) reads it: the token ids of
edge texts and pairs equal `AutoTokenizer.from_pretrained(folder)`'s for each tokenizer class
whose pipeline transformers 5 rebuilds, on files as their authors saved them (multilingual-e5's
XLM-R file from transformers 4, all-MiniLM's WordPiece), while "as-saved" keeps the file's own.

The XLM-R file stands in for the other SentencePiece classes (CamemBERT, T5, DeBERTa-v2) under
their names in tokenizer_config.json: transformers builds each class's pipeline over its vocabulary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from embedserve.engine import Engine
from embedserve.loading import LoadOptions
from embedserve.pairs import PairTokenizer
from embedserve.tokenization import ModelTokenizer
from embedserve.tokenizer_pipeline import (
    load_tokenizer,
    tokenizer_class,
    tokenizer_digest,
    tokenizer_sources,
)
from tokenizers import Tokenizer, normalizers

from .conftest import XLMR_TOKENIZER_CONFIG
from .support.edge_texts import EDGE_QUERIES, EDGE_TEXTS

MAX = 512
XLMR_SPECIALS = {k: v for k, v in XLMR_TOKENIZER_CONFIG.items() if k.endswith("_token")}


def _folder(root: Path, name: str, tokenizer: Path | Tokenizer, config: dict, model=None) -> Path:
    folder = root / name
    folder.mkdir()
    if isinstance(tokenizer, Path):
        shutil.copyfile(tokenizer, folder / "tokenizer.json")
    else:
        tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if model is not None:
        (folder / "config.json").write_text(json.dumps(model))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, xlmr_tokenizer_dir: Path, minilm_dir: Path) -> dict[str, Path]:
    """name → a folder: the original files, or them under another class or model type."""
    root = tmp_path_factory.mktemp("tokenizers")
    xlmr = xlmr_tokenizer_dir / "tokenizer.json"
    cased = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    cased.normalizer = normalizers.BertNormalizer(lowercase=False)
    return {
        "xlm-roberta": xlmr_tokenizer_dir,
        "xlm-roberta-by-model-type": _folder(
            root, "by-type", xlmr, XLMR_SPECIALS, {"model_type": "xlm-roberta"}
        ),
        "camembert": _folder(
            root, "camembert", xlmr, {**XLMR_SPECIALS, "tokenizer_class": "CamembertTokenizer"}
        ),
        "t5": _folder(
            root,
            "t5",
            xlmr,
            {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>"}
            | {"unk_token": "<unk>", "pad_token": "<pad>"},
        ),
        "deberta-v2": _folder(
            root,
            "deberta-v2",
            xlmr,
            {**XLMR_SPECIALS, "tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": True}
            | {"split_by_punct": True},
        ),
        # A cased WordPiece whose tokenizer_config.json does not say do_lower_case: the class
        # default (lower case) wins, as it did in transformers 4's BertTokenizerFast.
        "bert-cased-unflagged": _folder(
            root, "bert-cased", cased, {"tokenizer_class": "BertTokenizer"}
        ),
        # ModernBERT folders load with the generic class whatever class they name: file as is.
        "modernbert-generic": _folder(
            root,
            "modernbert",
            cased,
            {"tokenizer_class": "BertTokenizer"},
            {"model_type": "modernbert"},
        ),
    }


@pytest.fixture(scope="module")
def hf_tokenizers(folders):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(str(f)) for name, f in folders.items()}


def _ids(hf, texts: list[str]) -> list[list[int]]:
    return [hf(t, add_special_tokens=False)["input_ids"] for t in texts]


CASES = [
    "xlm-roberta",
    "xlm-roberta-by-model-type",
    "camembert",
    "t5",
    "deberta-v2",
    "bert-cased-unflagged",
    "modernbert-generic",
]


@pytest.mark.parametrize("name", CASES)
def test_text_ids_equal_transformers(name, folders, hf_tokenizers):
    hf = hf_tokenizers[name]
    ours = ModelTokenizer(folders[name] / "tokenizer.json", MAX).content_ids(EDGE_TEXTS)
    assert ours == _ids(hf, EDGE_TEXTS)
    as_saved = ModelTokenizer(folders[name] / "tokenizer.json", MAX, "as-saved")
    differ = [t for t, a, b in zip(EDGE_TEXTS, as_saved.content_ids(EDGE_TEXTS), ours) if a != b]
    if name == "modernbert-generic":
        assert tokenizer_class(folders[name], {"tokenizer_class": "BertTokenizer"}) is None
        assert not differ
    else:
        # What the rebuild is for: the file as saved tokenizes some of these differently.
        assert differ, name


def test_xlmr_sequences_and_pairs_equal_transformers(folders, hf_tokenizers):
    """With special tokens, and as pairs (what CrossEncoder feeds), on the original XLM-R file."""
    hf = hf_tokenizers["xlm-roberta"]
    path = folders["xlm-roberta"] / "tokenizer.json"
    tokenizer = ModelTokenizer(path, MAX)
    sequences = [
        tokenizer.model_sequence(i, ids, truncate=True, direction="right").tolist()
        for i, ids in enumerate(tokenizer.content_ids(EDGE_TEXTS))
    ]
    assert sequences == hf(EDGE_TEXTS)["input_ids"]
    assert [e.offsets for e in tokenizer.encodings(EDGE_TEXTS, add_special_tokens=False)] == [
        hf(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for t in EDGE_TEXTS
    ]
    ids = [s[1:-1] for s in sequences]
    assert tokenizer.decode(ids) == [hf.decode(i, skip_special_tokens=True) for i in ids]

    pairs = PairTokenizer(path, MAX)
    for query in EDGE_QUERIES:
        prepared = pairs.prepare(
            pairs.content_ids([query]) * len(EDGE_TEXTS), pairs.content_ids(EDGE_TEXTS)
        )
        want = hf([query] * len(EDGE_TEXTS), EDGE_TEXTS)["input_ids"]
        assert [p.ids.tolist() for p in prepared.pairs] == want, query


def test_as_saved_is_the_file_as_it_is(folders):
    path = folders["xlm-roberta"] / "tokenizer.json"
    raw = Tokenizer.from_file(str(path))
    as_saved = load_tokenizer(path, "as-saved")
    rebuilt = load_tokenizer(path)
    assert as_saved.to_str() == raw.to_str()
    trailing = "trailing space "
    assert as_saved.encode(trailing).tokens[-2:] == ["▁", "</s>"]
    assert rebuilt.encode(trailing).tokens[-2:] == ["▁space", "</s>"]


def test_tokenizer_mode_is_a_load_option(minilm_dir, folders):
    assert LoadOptions(tokenizer_mode="AS-SAVED").tokenizer_mode == "as-saved"
    with pytest.raises(ValueError, match=r"tokenizer_mode must be one of .*'tei'"):
        LoadOptions(tokenizer_mode="tei")
    # Any weights will do: tokenize() only tokenizes; the XLM-R folder supplies the tokenizer.
    text = "trailing space "
    rebuilt = Engine.from_pretrained(minilm_dir, tokenizer=folders["xlm-roberta"])
    as_saved = Engine.from_pretrained(
        minilm_dir, tokenizer=folders["xlm-roberta"], tokenizer_mode="as-saved"
    )
    assert as_saved.tokenize(text)[0] == [*rebuilt.tokenize(text)[0][:-1], 6, 2]  # 6 is "▁"


@pytest.mark.parametrize("mode", ["transformers", "as-saved"])
def test_tokenizer_sources_name_every_file_the_pipeline_reads(mode, folders, monkeypatch, tmp_path):
    """Caches of anything made from the ids key on tokenizer_sources (static int8's
    calibration): a file load_tokenizer reads that they leave out would let a stale one be used."""
    folder = tmp_path / "folder"
    shutil.copytree(folders["deberta-v2"], folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True}))
    read: set[Path] = set()
    real_read_text = Path.read_text

    def recording(self: Path, *args, **kwargs) -> str:
        read.add(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", recording)
    load_tokenizer(folder / "tokenizer.json", mode)
    monkeypatch.undo()
    sources = set(tokenizer_sources(folder / "tokenizer.json", mode))
    assert read <= sources and folder / "tokenizer.json" in sources
    assert (len(read), len(sources)) == ((3, 4) if mode == "transformers" else (0, 1))
    before = tokenizer_digest(folder / "tokenizer.json", mode)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}))
    changed = tokenizer_digest(folder / "tokenizer.json", mode) != before
    assert changed == (mode == "transformers")
