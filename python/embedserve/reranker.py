"""The reranking engine: query-document pairs → pair tokens → length-sorted micro-batches → scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedserve.errors import InputError
from embedserve.inputs import check_flag, check_positive_int, check_utf8
from embedserve.loading import LoadPlan, Pretrained, Runs
from embedserve.models import onnx_for
from embedserve.models.kind import RERANKER, RerankerConfig, load_reranker_config
from embedserve.pairs import Pair, PairTokenizer, PreparedPairs, pad_pairs
from embedserve.planning import default_max_batch_tokens, plan_batches
from embedserve.prompt_pairs import PromptPairTokenizer
from embedserve.runtime.backends import open_classifier
from embedserve.runtime.classifier import ClassifierSession
from embedserve.scoring import NONE, SIGMOID, SOFTMAX, apply_function


@dataclass(frozen=True)
class RerankerInfo:
    name: str
    max_tokens: int
    num_labels: int
    labels: tuple[str, ...]
    provider: str


@dataclass(frozen=True)
class Ranked:
    """One document's place in a ranking: its index in the request, its score, its text."""

    index: int
    score: float
    document: str


class Reranker(Pretrained):
    """Scores query-document pairs with a cross-encoder as sentence-transformers' CrossEncoder
    does (same pair tokens, same truncation). Thread-safe: it holds no per-call state.

    `Reranker.from_pretrained(spec, **options)` loads one (see loading.Pretrained, LoadOptions):
    a folder (safetensors compiled on first use, or an ONNX graph ending in logits), a catalog
    name or a hub repo id.
    """

    kind = RERANKER

    # fp32, or int8 (the dynamically quantized graph, not the engine's static one: its effect on
    # scores is not measured), on ONNX Runtime. `max_length` overrides the pair limit.
    runs = Runs("cross-encoders", precisions=("fp32", "int8"), runtimes=("onnxruntime",))

    def __init__(
        self,
        config: RerankerConfig,
        tokenizer: PairTokenizer,
        session: ClassifierSession,
        *,
        max_batch_tokens: int | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.session = session
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(session.provider)
        labels = session.num_labels or config.num_labels
        if labels != config.num_labels and not config.labels_named:
            config = replace(
                config, num_labels=labels, labels=tuple(f"LABEL_{i}" for i in range(labels))
            )
        if labels != config.num_labels:
            raise ValueError(
                f"{config.directory}: the graph gives {labels} scores per pair, config.json "
                f"names {config.num_labels} labels"
            )
        self.config = config
        self.activation = head_activation(config, labels)
        self.model_info = RerankerInfo(
            name=config.name,
            max_tokens=tokenizer.max_length,
            num_labels=labels,
            labels=config.labels,
            provider=session.provider,
        )

    @classmethod
    def graph(cls, plan: LoadPlan) -> Path:
        dynamic = "int8" if plan.precision.name == "int8" else None
        return onnx_for(plan.model_dir, dynamic, compile=plan.options.compile)

    @classmethod
    def from_plan(cls, plan: LoadPlan) -> Reranker:
        config = load_reranker_config(plan.config_dir, plan.name, plan.options.max_length)
        session = open_classifier(cls.graph(plan), plan.runtime, plan.session_options)
        path, mode = plan.config_dir / "tokenizer.json", plan.options.tokenizer_mode
        tokenizer = (
            PromptPairTokenizer(path, config.max_length, mode, plan.options.rerank_instruction)
            if config.yes_no
            else PairTokenizer(path, config.max_length, mode)
        )
        return cls(
            config,
            tokenizer,
            session,
            max_batch_tokens=plan.max_batch_tokens(session.provider),
        )

    # -- the steps, public so the server's batcher can run them separately --

    def prepare(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        max_tokens_per_doc: int | None = None,
        param: str = "documents",
        instruction: str | None = None,
    ) -> PreparedPairs:
        """The (query, document) pairs as the model will see them, query tokenized once; an error
        about one document names it as `param[index]`. `instruction`: an LLM reranker's task
        (its default: the server's or the model card's)."""
        _check_text(query, "query")
        docs = _check_texts(documents, "documents")
        query_ids = self.tokenizer.first_ids([query], instruction)[0]
        doc_ids = self.tokenizer.second_ids(docs) if docs else []
        return self.tokenizer.prepare(
            [query_ids] * len(docs),
            doc_ids,
            truncate=truncate,
            max_second_tokens=max_tokens_per_doc,
            param=param,
        )

    def prepare_pairs(
        self,
        firsts: Sequence[str],
        seconds: Sequence[str],
        *,
        truncate: bool = True,
        param: str = "pairs",
        instruction: str | None = None,
    ) -> PreparedPairs:
        """Any pairs (firsts[i], seconds[i]); the error for a too-long pair names `param[i]`."""
        a, b = _check_texts(firsts, "text_1"), _check_texts(seconds, "text_2")
        if len(a) != len(b):
            raise InputError(f"{len(a)} first texts but {len(b)} second texts", param="text_2")
        ids_a = self.tokenizer.first_ids(a, instruction) if a else []
        ids_b = self.tokenizer.second_ids(b) if b else []
        return self.tokenizer.prepare(ids_a, ids_b, truncate=truncate, param=param)

    def forward(self, pairs: Sequence[Pair]) -> np.ndarray:
        """Logits float32 [n, labels] for one padded batch."""
        ids, mask, types = pad_pairs(pairs)
        return self.session.run(ids, mask, types)

    def logits(self, pairs: Sequence[Pair]) -> np.ndarray:
        """Logits for any number of pairs, in their order, via length-sorted micro-batches."""
        out = np.empty((len(pairs), self.model_info.num_labels), dtype=np.float32)
        lengths = np.fromiter((len(p) for p in pairs), dtype=np.int64, count=len(pairs))
        for group in plan_batches(lengths, self.max_batch_tokens):
            out[group] = self.forward([pairs[i] for i in group])
        return out

    def scores(self, logits: np.ndarray, *, raw_scores: bool = False) -> np.ndarray:
        """Scores from logits, `self.activation` of them unless `raw_scores`: [n] for a one-logit
        head, [n, labels] for a multi-label head."""
        scores = apply_function(logits, NONE if raw_scores else self.activation)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def relevance(self, logits: np.ndarray, *, raw_scores: bool = False) -> np.ndarray:
        """One relevance score per pair: a multi-label head's last label (the positive class of a
        binary relevant/not-relevant head)."""
        scores = self.scores(logits, raw_scores=raw_scores)
        return scores if scores.ndim == 1 else scores[:, -1]

    # -- the whole thing --

    def score(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        raw_scores: bool = False,
        truncate: bool = True,
        instruction: str | None = None,
    ) -> np.ndarray:
        """Scores of (query, document) pairs in order, as `scores` shapes them."""
        check_flag(truncate, "truncate")
        check_flag(raw_scores, "raw_scores")
        firsts, seconds = _split_pairs(pairs)
        prepared = self.prepare_pairs(firsts, seconds, truncate=truncate, instruction=instruction)
        return self.scores(self.logits(prepared.pairs), raw_scores=raw_scores)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        raw_scores: bool = False,
        truncate: bool = True,
        max_tokens_per_doc: int | None = None,
        instruction: str | None = None,
    ) -> list[Ranked]:
        """`documents` ordered by relevance to `query`, best first (ties keep their order), cut to
        `top_n` if given."""
        check_positive_int(top_n, "top_n")
        check_positive_int(max_tokens_per_doc, "max_tokens_per_doc")
        check_flag(truncate, "truncate")
        check_flag(raw_scores, "raw_scores")
        prepared = self.prepare(
            query,
            documents,
            truncate=truncate,
            max_tokens_per_doc=max_tokens_per_doc,
            instruction=instruction,
        )
        relevance = self.relevance(self.logits(prepared.pairs), raw_scores=raw_scores)
        return [
            Ranked(int(i), float(relevance[i]), documents[i]) for i in ranking(relevance, top_n)
        ]


def head_activation(config: RerankerConfig, num_labels: int) -> str:
    """The function `Reranker.scores` applies: CrossEncoder's (`config.activation` where the folder
    declares one, else a sigmoid on one logit) for a one-logit head. A multi-label head gives
    CrossEncoder's `apply_softmax=True` scores: a softmax over its labels (its declared Identity,
    CrossEncoder's default, or Softmax), unless it declares a sigmoid per label."""
    if num_labels > 1:
        return SIGMOID if config.activation == SIGMOID else SOFTMAX
    if config.activation == SOFTMAX:
        raise ValueError(
            f"{config.directory}: the declared activation is Softmax on a one-logit head, which "
            "scores every pair 1.0; a one-logit cross-encoder takes Sigmoid or Identity"
        )
    return config.activation or SIGMOID


def ranking(relevance: np.ndarray, top_n: int | None = None) -> np.ndarray:
    """Indices by descending score, ties in input order, at most `top_n` of them."""
    order = np.argsort(-np.asarray(relevance), kind="stable")
    return order if top_n is None else order[:top_n]


def _split_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """`score`'s pairs as their first and second texts; anything but an array of (first, second)
    string pairs is an InputError naming `pairs[i]`."""
    # Not a generator: it would be read up before the texts are taken from it.
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        raise InputError(
            f"pairs must be an array of (first, second) pairs, not {type(pairs).__name__}",
            param="pairs",
        )
    firsts, seconds = [], []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise InputError(
                f"pairs[{index}] must be a (first, second) pair of strings, got {pair!r:.60}",
                index=index,
                param="pairs",
            )
        for side, text in enumerate(pair):
            check_string(text, f"pairs[{index}][{side}]", "pairs", index)
        firsts.append(pair[0])
        seconds.append(pair[1])
    return firsts, seconds


def check_string(value: object, where: str, param: str, index: int | None = None) -> str:
    """`value` if it is text the tokenizer takes (a string, UTF-8); else an InputError naming
    `where` (`query`, `documents[2]`, `pairs[0][1]`), the one check of every text these models
    are handed."""
    if not isinstance(value, str):
        raise InputError(
            f"{where} must be a string, not {type(value).__name__}", index=index, param=param
        )
    check_utf8(value, where, index=index, param=param)
    return value


def _check_text(value: object, param: str) -> str:
    return check_string(value, param, param)


def _check_texts(values: Sequence[str], param: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InputError(
            f"{param} must be an array of strings, not {type(values).__name__}", param=param
        )
    items = list(values)
    for index, item in enumerate(items):
        check_string(item, f"{param}[{index}]", param, index)
    return items
