"""A model folder's tokenizer.json read as transformers 5, and so sentence-transformers, reads it.

transformers 5 no longer takes tokenizer.json as it is for most tokenizer classes: it keeps the
vocabulary, merges, added tokens, post-processor and SentencePiece charsmap from the file and
builds the normalizer, pre-tokenizer and decoder from the class and tokenizer_config.json (each
class's `__init__`). Files saved by transformers 4 can differ from that: XLM-R's bare Metaspace
gives trailing whitespace its own `▁` token, which transformers 5's `WhitespaceSplit` drops; a
cased BERT file whose tokenizer_config.json does not say `do_lower_case` is lowercased; a Llama 2
file's Prepend normalizer gives a leading space a `▁` of its own, Metaspace does not.
`load_tokenizer` rebuilds those parts as the class does, for the classes where they can differ,
then lowercases first where sentence_bert_config.json says `do_lower_case` (sentence-transformers'
Transformer module does, whatever the tokenizer's class or files say); "as-saved" takes the file
as it is, as text-embeddings-inference does (it reads only sentence_bert_config.json's
max_seq_length).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from embedserve.fileio import read_json, sha256_of

TOKENIZER_MODES = ("transformers", "as-saved")

Config = dict[str, Any]

# sentence-transformers' Transformer module config, under the names its versions wrote (the
# first that holds something counts, as Transformer.load_config reads them).
TRANSFORMER_CONFIGS = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)


def load_tokenizer(path: Path, mode: str = "transformers") -> Tokenizer:
    """The tokenizer in `path` (a tokenizer.json) without padding or truncation, its pipeline
    as transformers 5 builds it from the folder (mode "transformers") or as saved ("as-saved")."""
    if mode not in TOKENIZER_MODES:
        raise ValueError(f"tokenizer_mode must be one of {TOKENIZER_MODES}, got {mode!r}")
    tokenizer = _read_tokenizer(path)
    # Shipped files may pin padding/truncation (all-MiniLM's pads to 128); batches pad themselves.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if mode == "transformers":
        config = _read_json(path.parent / "tokenizer_config.json")
        rebuild = _REBUILDS.get(tokenizer_class(path.parent, config) or "")
        if rebuild is not None:
            rebuild(tokenizer, config)
        if transformer_config(path.parent).get("do_lower_case"):
            _lowercase_first(tokenizer)
    return tokenizer


def _read_tokenizer(path: Path) -> Tokenizer:
    """tokenizer.json at `path`, or, where a folder has none, the WordPiece tokenizer its
    vocab.txt makes as transformers' BertTokenizer builds it (older BERT repos ship no other)."""
    if not path.exists():
        folder = path.parent
        config = _read_json(folder / "tokenizer_config.json")
        if (folder / VOCAB).exists() and tokenizer_class(folder, config) in _WORDPIECE_CLASSES:
            return _wordpiece_from_vocab(folder, config)
        raise FileNotFoundError(
            f"{path} not found: the model needs a tokenizer.json (or a vocab.txt, for a "
            f"tokenizer of the classes {', '.join(sorted(_WORDPIECE_CLASSES))})"
        )
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot read
        # A ValueError, as the model folder's other errors (ModelConfigError is one): this module
        # sits below embedserve.models, which imports it.
        raise ValueError(f"{path}: the tokenizers library cannot read it ({exc})") from exc


def tokenizer_sources(path: Path, mode: str = "transformers") -> list[Path]:
    """The files `load_tokenizer(path, mode)` reads, those present: whatever changes one may
    change the ids, so a cache of anything made from the ids keys on them (`tokenizer_digest`)."""
    names = ["tokenizer.json"] if path.exists() else [VOCAB, "special_tokens_map.json", ADDED]
    if mode == "transformers":
        names += ["tokenizer_config.json", "config.json", *TRANSFORMER_CONFIGS]
    return [path.parent / name for name in names if (path.parent / name).exists()]


def tokenizer_digest(path: Path, mode: str = "transformers") -> str:
    """sha256 (hex) of the mode and of each file `load_tokenizer(path, mode)` reads, by name."""
    files = [[source.name, sha256_of(source)] for source in tokenizer_sources(path, mode)]
    return hashlib.sha256(json.dumps([mode, files]).encode()).hexdigest()


def transformer_config(folder: Path) -> Config:
    """sentence-transformers' Transformer module config in `folder` (sentence_bert_config.json or
    an older name), {} if none: its `max_seq_length` and `do_lower_case` set the tokenizer."""
    for name in TRANSFORMER_CONFIGS:
        config = _read_json(folder / name)
        if config:
            return config
    return {}


def _lowercase_first(tokenizer: Tokenizer) -> None:
    """A Lowercase normalizer before the others unless one is there already (at the top or in a
    Sequence: a BertNormalizer's own lowercase flag does not count), as sentence-transformers'
    Transformer module does for `do_lower_case`."""
    found = tokenizer.normalizer
    steps = list(found) if isinstance(found, normalizers.Sequence) else [found]
    if any(isinstance(step, normalizers.Lowercase) for step in steps):
        return
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), *(step for step in steps if step is not None)]
    )


def tokenizer_class(folder: Path, config: Config) -> str | None:
    """The tokenizer class AutoTokenizer picks for `folder` (`config` is its
    tokenizer_config.json), without a `Fast` suffix: the one tokenizer_config.json names, else
    config.json's, else its model type's; None where it takes the generic class whatever the
    files name, or none is known. Only the classes in `_REBUILDS` change the file's pipeline."""
    model = _read_json(folder / "config.json")
    model_type = model.get("model_type")
    if model_type in _GENERIC_MODEL_TYPES:
        return None
    name = config.get("tokenizer_class") or model.get("tokenizer_class")
    if isinstance(name, str):
        return name.removesuffix("Fast")
    return _MODEL_TYPE_CLASSES.get(model_type) if isinstance(model_type, str) else None


# -- each class's pipeline, as its __init__ in transformers 5.x builds it ---------------------

VOCAB = "vocab.txt"
ADDED = "added_tokens.json"
# The classes transformers builds from vocab.txt alone, and their special tokens' defaults.
_WORDPIECE_CLASSES = frozenset({"BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer"})
_BERT_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def _wordpiece_from_vocab(folder: Path, config: Config) -> Tokenizer:
    """BertTokenizer's `__init__` from `folder`'s vocab.txt (one token a line, its id the line's
    number): WordPiece, the BERT normalizer and pre-tokenizer, [CLS] A [SEP], and the special
    tokens (named in tokenizer_config.json or special_tokens_map.json) matched whole in texts."""
    with (folder / VOCAB).open(encoding="utf-8") as lines:
        vocab = {line.rstrip("\n"): index for index, line in enumerate(lines)}
    named = {**_BERT_SPECIALS, **_special_names(config)}
    named.update(_special_names(_read_json(folder / "special_tokens_map.json")))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=named["unk_token"]))
    _bert(tokenizer, config)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in named.values()]
    )
    _add_listed_tokens(tokenizer, folder / ADDED)
    cls, sep = named["cls_token"], named["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    return tokenizer


def _add_listed_tokens(tokenizer: Tokenizer, path: Path) -> None:
    """added_tokens.json's tokens (token -> id, past the vocabulary), matched whole after
    normalization as transformers adds them; ids that do not follow on are refused by name."""
    listed = _read_json(path)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in listed.values()):
        raise ValueError(f'{path} must map tokens to whole-number ids, like {{"<new>": 30522}}')
    for token, wanted in sorted(listed.items(), key=lambda item: item[1]):
        if tokenizer.token_to_id(token) is None:
            tokenizer.add_tokens([AddedToken(token, normalized=True)])
        if tokenizer.token_to_id(token) != wanted:
            raise ValueError(
                f"{path}: {token!r} has id {wanted!r}, but the vocabulary and the tokens before "
                f"it give it {tokenizer.token_to_id(token)}; the ids must follow on from vocab.txt"
            )


def _special_names(config: Config) -> dict[str, str]:
    """The special tokens a tokenizer config names, as text (transformers writes a token as a
    string or as an AddedToken's fields)."""
    names = {}
    for key in _BERT_SPECIALS:
        value = config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            names[key] = value
    return names


def _bert(tokenizer: Tokenizer, config: Config) -> None:
    """BertTokenizer (DistilBERT's, ELECTRA's) and MPNetTokenizer: a BertNormalizer set by
    tokenizer_config.json's flags, with the class defaults when it does not say."""
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")


def _sentencepiece(always_prepend: bool) -> Callable[[Tokenizer, Config], None]:
    """XLM-R, CamemBERT and T5: the charsmap alone, then whitespace split before Metaspace."""

    def rebuild(tokenizer: Tokenizer, config: Config) -> None:
        prepend = "always" if always_prepend or config.get("add_prefix_space", True) else "never"
        tokenizer.normalizer = _precompiled(tokenizer)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=True),
            ]
        )
        tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)

    return rebuild


def _deberta_v2(tokenizer: Tokenizer, config: Config) -> None:
    steps: list[normalizers.Normalizer] = []
    if config.get("do_lower_case", False):
        steps.append(normalizers.Lowercase())
    charsmap = _precompiled(tokenizer)
    if charsmap is not None:
        steps += [
            charsmap,
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    else:
        steps += [
            normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "),
            normalizers.NFC(),
            normalizers.Strip(left=False, right=True),
        ]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if config.get("add_prefix_space", True) else "first"
    splits: list[pre_tokenizers.PreTokenizer] = []
    if config.get("split_by_punct", False):
        splits.append(pre_tokenizers.Punctuation(behavior="isolated"))
    splits.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)


def _llama(tokenizer: Tokenizer, config: Config) -> None:
    """LlamaTokenizer (Llama 2, and Mistral files that name it): no normalizer, Metaspace without
    splitting, prefix "first" (legacy: "always", add_prefix_space false: "never"). Files saved
    by transformers 4 with the legacy Prepend + Replace normalizer put a second `▁` before a
    leading space, which Metaspace does not. Byte-level files that name the class (Llama 3)
    are loaded by transformers with the generic class, as saved."""
    if '"ByteLevel"' in tokenizer.to_str():
        return
    add_prefix_space = config.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    if not add_prefix_space:
        prepend = "never"
    else:
        prepend = "always" if config.get("legacy") else "first"
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme=prepend, split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)


_REBUILDS: dict[str, Callable[[Tokenizer, Config], None]] = {
    "BertTokenizer": _bert,
    "DistilBertTokenizer": _bert,
    "ElectraTokenizer": _bert,
    "MPNetTokenizer": _bert,
    "XLMRobertaTokenizer": _sentencepiece(always_prepend=False),
    "CamembertTokenizer": _sentencepiece(always_prepend=False),
    "T5Tokenizer": _sentencepiece(always_prepend=True),
    "DebertaV2Tokenizer": _deberta_v2,
    "LlamaTokenizer": _llama,
    # GemmaTokenizer and Qwen2Tokenizer build what their files hold (checked on the layouts
    # transformers 4 saved), and keep the file's post-processor as every class does.
}

# AutoTokenizer's class for a model type when no file names one (transformers' auto mapping).
_MODEL_TYPE_CLASSES = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "electra": "BertTokenizer",
    "nomic_bert": "BertTokenizer",
    "mpnet": "MPNetTokenizer",
    "xlm-roberta": "XLMRobertaTokenizer",
    "camembert": "CamembertTokenizer",
    "t5": "T5Tokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
    "llama": "LlamaTokenizer",
}
# Model types AutoTokenizer loads with the generic class whatever class their files name
# (Mistral's registered class is generic unless mistral-common is installed).
_GENERIC_MODEL_TYPES = frozenset({"modernbert", "mistral", "mixtral"})


def _precompiled(tokenizer: Tokenizer) -> normalizers.Normalizer | None:
    """The file's SentencePiece charsmap normalizer (alone or first in a Sequence), if any."""
    found = tokenizer.normalizer
    if isinstance(found, normalizers.Sequence):
        state = json.loads(found.__getstate__())
        for index, step in enumerate(state["normalizers"]):
            if step.get("type") == "Precompiled":
                return found[index]
        return None
    return found if isinstance(found, normalizers.Precompiled) else None


def _read_json(path: Path) -> Config:
    raw = read_json(path)
    return raw if isinstance(raw, dict) else {}
