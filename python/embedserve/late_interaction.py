"""Late interaction: ColBERT models in PyLate's layout, token vectors, and MaxSim scoring.

A ColBERT encodes every token: the transformer's final states, projected by the model's Dense
modules and L2-normalized one token at a time. Queries and documents differ, as in
`pylate.models.ColBERT`: a `[Q] ` or `[D] ` marker goes in after the first special token; a
query is cut at `query_length` and, with query expansion, padded to it with the mask token (kept
in the output, attended to only if the model says so); a document is cut at `document_length`
and loses its punctuation (the skiplist) from the output. MaxSim scores a query against a
document: for each query token its best dot product with any document token, summed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve import _core
from embedserve.engine import ModelInfo
from embedserve.errors import InputTooLongError
from embedserve.inputs import check_flag, check_positive_int
from embedserve.loading import LoadPlan, Pretrained, Runs
from embedserve.models.colbert_config import ColbertConfig, load_colbert_config
from embedserve.models.dense import load_dense
from embedserve.models.family import model_family
from embedserve.models.kind import LATE_INTERACTION
from embedserve.models.variants import graph_for
from embedserve.planning import plan_batches
from embedserve.preparing import Prepared, TokenIds
from embedserve.reranker import Ranked, _check_text, _check_texts, ranking
from embedserve.runtime.backends import Backend, open_backend
from embedserve.runtime.session import EncoderSession
from embedserve.tokenization import ModelTokenizer


class ColbertIds(TokenIds):
    """A query or document as the model sees it: the first `attended` tokens are attended to,
    and the tokens where `keep` is True are output (its states land in `states`)."""

    attended: int = 0
    keep: np.ndarray | None = None


def maxsim(query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
    """ColBERT's score of one query [q, d] against each document [t, d]: the sum over query
    tokens of the largest dot product with a document token (pylate.scores.colbert_scores).
    A document with no token scores 0."""
    scores = np.zeros(len(documents), dtype=np.float32)
    q = query.astype(np.float32, copy=False)
    for i, doc in enumerate(documents):
        if len(doc):
            scores[i] = (q @ doc.T).max(axis=1).sum()
    return scores


@dataclass(frozen=True)
class ColbertInfo(ModelInfo):
    query_length: int = 32
    document_length: int = 180


class ColBERT(Pretrained):
    """A PyLate ColBERT: token vectors of queries and documents, and MaxSim ranking. Thread-safe.

    `ColBERT.from_pretrained(folder)` loads one; `encode(texts, is_query=...)` gives each text's
    normalized token vectors as `pylate.models.ColBERT.encode` does; `rank` and `score` order
    documents by MaxSim.
    """

    kind = LATE_INTERACTION
    # Token states leave the graph, so no in-graph pooling and no IOBinding path on CUDA.
    runs = Runs("ColBERT models")

    def __init__(
        self,
        config: ColbertConfig,
        tokenizer: ModelTokenizer,
        session: EncoderSession | Backend,
        *,
        name: str,
        max_batch_tokens: int,
        precision: str = "fp32",
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.session = session
        self.max_batch_tokens = max_batch_tokens
        self.dense = [load_dense(path) for path in config.dense_paths]
        self.query_marker = _marker(tokenizer, config.query_prefix)
        self.document_marker = _marker(tokenizer, config.document_prefix)
        specials = _special_tokens(config.directory)
        self.mask_id = _first_id(tokenizer, specials.get("mask_token"), specials.get("eos_token"))
        if self.mask_id is None and config.do_query_expansion:
            raise ValueError(f"{config.directory}: no mask or eos token to expand queries with")
        unk = _first_id(tokenizer, specials.get("unk_token"))
        # As transformers' convert_tokens_to_ids: a word outside the vocabulary is the unk id.
        skip = {tokenizer.token_id(w) for w in config.skiplist_words}
        self.skip_ids = np.array(
            sorted({unk if i is None else i for i in skip} - {None}), dtype=np.int64
        )
        self.model_info = ColbertInfo(
            name=name,
            dimension=self.dense[-1].out_features,
            max_tokens=config.document_length,
            pooling="none",
            normalize=True,
            supports_dimensions=False,
            provider=session.provider,
            precision=precision,
            query_length=config.query_length,
            document_length=config.document_length,
            family=model_family(config.directory),
        )

    @classmethod
    def graph(cls, plan: LoadPlan) -> Path:
        return graph_for(
            plan.model_dir,
            plan.precision,
            plan.config_dir,
            pooling=None,
            compile=plan.options.compile,
            # Documents are the long side: int8 calibrates at their limit.
            max_length=load_colbert_config(plan.config_dir).document_length,
            tokenizer_mode=plan.options.tokenizer_mode,
        )

    @classmethod
    def from_plan(cls, plan: LoadPlan) -> ColBERT:
        config = load_colbert_config(plan.config_dir)
        session = open_backend(
            cls.graph(plan),
            plan.precision,
            plan.runtime,
            plan.session_options,
            max_sequence=max(config.query_length, config.document_length),
        )
        tokenizer = ModelTokenizer(
            plan.config_dir / "tokenizer.json", config.document_length, plan.options.tokenizer_mode
        )
        return cls(
            config,
            tokenizer,
            session,
            name=plan.name,
            max_batch_tokens=plan.max_batch_tokens(session.provider),
            precision=plan.precision.name,
        )

    # -- the steps, public so the server's batcher can run them separately --

    def prepare(
        self,
        texts: Sequence[str],
        *,
        is_query: bool,
        truncate: bool = True,
        start: int = 0,
        max_tokens: int | None = None,
    ) -> Prepared:
        """Each text as the model sees it (marker in, cut, queries expanded); `untruncated_tokens`
        count the tokens before the cut, marker and special tokens included. `max_tokens` first
        keeps each text's first tokens (Cohere's `max_tokens_per_doc`): the caller's own cut, so
        `truncate=False` allows it and the counts are of what it keeps, as a cross-encoder's."""
        config = self.config
        limit = config.query_length if is_query else config.document_length
        marker = self.query_marker if is_query else self.document_marker
        extra = self.tokenizer.specials + (marker is not None)
        room = limit - extra
        content = self.tokenizer.content_ids(list(texts))
        if max_tokens is not None:
            content = [ids[:max_tokens] for ids in content]
        sequences: list[np.ndarray] = []
        for index, ids in enumerate(content, start):
            if len(ids) > room:
                if not truncate:
                    raise InputTooLongError(index, len(ids) + extra, limit)
                ids = ids[:room]
            full = self.tokenizer.prefix + ids + self.tokenizer.suffix
            if marker is not None:
                full = full[:1] + [marker] + full[1:]
            attended = len(full)
            expand = is_query and config.do_query_expansion
            if expand:
                full = full + [self.mask_id] * (limit - len(full))  # type: ignore[list-item]
                if config.attend_to_expansion_tokens:
                    attended = limit
            seq = np.asarray(full, dtype=np.int64).view(ColbertIds)
            seq.attended = attended
            seq.keep_states = True
            seq.keep = None if is_query else ~np.isin(seq, self.skip_ids)
            sequences.append(seq)
        untruncated = np.fromiter((len(ids) + extra for ids in content), np.int64, len(content))
        return Prepared(sequences, untruncated)

    def forward(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Token vectors of one batch into each sequence's `states`; returns no pooled columns."""
        longest = max(len(s) for s in sequences)
        ids = np.zeros((len(sequences), longest), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : getattr(seq, "attended", len(seq))] = 1
        out = self.session.run(ids, mask, np.zeros_like(ids))
        kept = []
        for row, seq in enumerate(sequences):
            states = out[row, : len(seq)]
            keep = getattr(seq, "keep", None)
            kept.append(states if keep is None else states[keep])
        # One projection and one normalization for the whole batch's tokens, then split back.
        vectors = np.concatenate(kept)
        for layer in self.dense:
            vectors = layer(vectors)
        vectors = _core.cut_and_normalize_(np.ascontiguousarray(vectors, np.float32), None, True)
        ends = np.cumsum([len(k) for k in kept])
        for seq, part in zip(sequences, np.split(vectors, ends[:-1])):
            seq.states = part  # type: ignore[attr-defined]
        return np.empty((len(sequences), 0), dtype=np.float32)

    # -- the whole thing --

    def encode(
        self, texts: str | Sequence[str], *, is_query: bool, truncate: bool = True
    ) -> list[np.ndarray]:
        """Normalized token vectors [tokens, dimension] of each text, in order."""
        check_flag(is_query, "is_query")
        check_flag(truncate, "truncate")
        batch = (
            [_check_text(texts, "texts")]
            if isinstance(texts, str)
            else _check_texts(texts, "texts")
        )
        sequences = self.prepare(batch, is_query=is_query, truncate=truncate).sequences
        lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        for group in plan_batches(lengths, self.max_batch_tokens):
            self.forward([sequences[i] for i in group])
        return [seq.states for seq in sequences]  # type: ignore[attr-defined]

    def maxsim_scores(self, query: np.ndarray, documents: Sequence[np.ndarray]) -> np.ndarray:
        """The score of encoded token vectors: PyLate's plain MaxSim sum (BGE-M3's differs)."""
        return maxsim(query, documents)

    def score(self, query: str, documents: Sequence[str], *, truncate: bool = True) -> np.ndarray:
        """MaxSim of `query` against each document, float32 [len(documents)]."""
        (q,) = self.encode([_check_text(query, "query")], is_query=True, truncate=truncate)
        docs = self.encode(_check_texts(documents, "documents"), is_query=False, truncate=truncate)
        return self.maxsim_scores(q, docs)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        truncate: bool = True,
    ) -> list[Ranked]:
        """`documents` ordered by MaxSim with `query`, best first (ties keep their order), cut to
        `top_n` if given: `Reranker.rank`'s shape."""
        check_positive_int(top_n, "top_n")
        scores = self.score(query, documents, truncate=truncate)
        return [Ranked(int(i), float(scores[i]), documents[i]) for i in ranking(scores, top_n)]


def _marker(tokenizer: ModelTokenizer, prefix: str) -> int | None:
    """The marker's token id (PyLate adds `[Q] `/`[D] ` to the vocabulary); None for no prefix."""
    if not prefix:
        return None
    found = tokenizer.token_id(prefix)
    if found is None:
        raise ValueError(f"the tokenizer has no token {prefix!r} for the ColBERT marker")
    return found


def _first_id(tokenizer: ModelTokenizer, *tokens: object) -> int | None:
    for token in tokens:
        if isinstance(token, dict):  # transformers 4 wrote AddedToken dicts
            token = token.get("content")
        if isinstance(token, str):
            found = tokenizer.token_id(token)
            if found is not None:
                return found
    return None


def _special_tokens(directory: Path) -> dict[str, object]:
    """`mask_token`, `unk_token`, ... as the tokenizer's configs name them."""
    found: dict[str, object] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            found.update({k: v for k, v in data.items() if k.endswith("_token") and k not in found})
    return found
