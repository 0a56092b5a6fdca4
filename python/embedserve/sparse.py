"""Sparse vectors: texts → token ids → length-sorted micro-batches → (token id, weight) pairs.

Two heads give them:

- SPLADE, a `*ForMaskedLM` checkpoint (sentence-transformers' SparseEncoder: MLMTransformer +
  SpladePooling): the compiled graph ends in the MLM head and SPLADE's masked max, and hands out
  only the non-zero entries (models.sparse_heads); log1p is applied here to those few values.
- BGE-M3's `sparse_linear.pt` beside an XLM-R checkpoint (FlagEmbedding's BGEM3FlagModel):
  relu(linear(hidden)) per token, the max per token id, its cls/eos/pad/unk tokens dropped.

Either way a vector is a `SparseVector` (ascending token ids, float32 weights), pruned on request
to its `top_k` largest weights by magnitude and/or the weights above `threshold`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from embedserve.errors import InputError
from embedserve.inputs import Inputs, check_flag, check_positive_int, text_batch
from embedserve.loading import LoadPlan, Pretrained, Runs
from embedserve.models import ModelConfig, ModelConfigError
from embedserve.models.bge_m3 import SPARSE_LINEAR, dropped_special_tokens, is_bge_m3, read_linear
from embedserve.models.config import (
    STATIC_MAX_TOKENS,
    check_max_length,
    max_seq_length,
    read_prompts,
)
from embedserve.models.family import model_family
from embedserve.models.kind import SPARSE, is_masked_lm, read_hf_config
from embedserve.models.splade_layout import SpladeLayout, is_splade, splade_layout
from embedserve.models.st_modules import read_json
from embedserve.planning import default_max_batch_tokens, pad_batch, plan_batches
from embedserve.preparing import TextPreparer, prompt_name_for
from embedserve.tokenization import ModelTokenizer, check_direction

if TYPE_CHECKING:
    from embedserve.engine import Engine
    from embedserve.runtime.session import EncoderSession
    from embedserve.runtime.sparse_session import SparseSession

SPLADE = "splade"
BGE_M3 = "bge-m3"


@dataclass(frozen=True)
class SparseVector:
    """One text's sparse vector: ascending token ids and their float32 weights (non-zero; > 0
    but for an inference-free query table's own weights)."""

    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[int, float]:
        return dict(zip(self.indices.tolist(), self.values.tolist()))

    def dense(self, size: int) -> np.ndarray:
        """The float32 [size] vector (size: the vocabulary)."""
        out = np.zeros(size, dtype=np.float32)
        out[self.indices] = self.values
        return out


@dataclass(frozen=True)
class SparseInfo:
    name: str
    head: str  # SPLADE or BGE_M3
    dimension: int  # the vocabulary: the largest index is dimension - 1
    max_tokens: int
    provider: str
    prompts: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    # Queries are weighted by a table (SparseStaticEmbedding), not run through the model.
    inference_free_queries: bool = False
    family: str | None = None  # models/family.py


class SparseHead(Protocol):
    provider: str

    def __call__(self, sequences: Sequence[np.ndarray]) -> list[SparseVector]: ...


class SpladeHead:
    """Runs the SPLADE graph; log1p (once, or twice for `log1p_relu`) on the non-zero values."""

    def __init__(self, session: SparseSession, log1p_times: int) -> None:
        self.session = session
        self.provider = session.provider
        self.log1p_times = log1p_times

    def __call__(self, sequences: Sequence[np.ndarray]) -> list[SparseVector]:
        ids, mask, types = pad_batch(list(sequences))
        rows, cols, values = self.session.run(ids, mask, types)
        for _ in range(self.log1p_times):
            values = np.log1p(values)
        bounds = np.searchsorted(rows, np.arange(len(sequences) + 1))
        return [SparseVector(cols[a:b].astype(np.int64), values[a:b]) for a, b in pairwise(bounds)]


class BgeM3Head:
    """Runs the encoder; relu(hidden @ w + b) per token, the max per token id, specials dropped."""

    def __init__(
        self,
        session: EncoderSession,
        weight: np.ndarray,
        bias: np.ndarray | None,
        dropped: list[int],
    ) -> None:
        if weight.shape[0] != 1:
            raise ModelConfigError(f"{SPARSE_LINEAR} has {weight.shape[0]} outputs; it needs one")
        self.session = session
        self.provider = session.provider
        self.weight = weight[0]
        self.bias = 0.0 if bias is None else float(bias[0])
        self.dropped = np.asarray(sorted(dropped), dtype=np.int64)

    def __call__(self, sequences: Sequence[np.ndarray]) -> list[SparseVector]:
        ids, mask, types = pad_batch(list(sequences))
        hidden = self.session.run(ids, mask, types)
        weights = np.maximum(hidden @ self.weight + np.float32(self.bias), 0.0)
        return [
            _max_per_id(seq, weights[row, : len(seq)], self.dropped)
            for row, seq in enumerate(sequences)
        ]


def _max_per_id(ids: np.ndarray, weights: np.ndarray, dropped: np.ndarray) -> SparseVector:
    keep = (weights > 0) & ~np.isin(ids, dropped)
    ids, weights = ids[keep], weights[keep].astype(np.float32)
    order = np.lexsort((-weights, ids))  # by id, the largest weight first
    ids, weights = ids[order], weights[order]
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return SparseVector(ids[first].astype(np.int64), weights[first])


def prune(
    vector: SparseVector, top_k: int | None = None, threshold: float | None = None
) -> SparseVector:
    """The weights above `threshold`, then the `top_k` largest of them by magnitude (ties: the
    lower id), still in ascending id order."""
    indices, values = vector.indices, vector.values
    if threshold is not None:
        keep = values > threshold
        indices, values = indices[keep], values[keep]
    if top_k is not None and len(values) > top_k:
        # By magnitude, as sentence-transformers' max_active_dims: a SparseStaticEmbedding's
        # table is unconstrained, so an inference-free query may hold negative weights.
        chosen = np.sort(np.argsort(-np.abs(values), kind="stable")[:top_k])
        indices, values = indices[chosen], values[chosen]
    return SparseVector(indices, values)


class StaticQuery:
    """sentence-transformers' SparseStaticEmbedding: a query's vector is the table's weight of
    each token id it holds (once, however often it occurs), tokenized without special tokens
    and cut at the tokenizer's limit (STATIC_MAX_TOKENS where it saved none). No model runs."""

    def __init__(self, tokenizer: ModelTokenizer, weight: np.ndarray) -> None:
        self.tokenizer = tokenizer
        self.weight = weight

    @classmethod
    def load(cls, folder: Path, mode: str = "transformers") -> StaticQuery:
        from embedserve.models.weights import load_safetensors

        weight = load_safetensors(folder / "model.safetensors").get("weight")
        if weight is None or weight.ndim != 1:
            raise ModelConfigError(f"{folder}: SparseStaticEmbedding has no 1-D `weight`")
        limit = (read_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
        # No limit saved (or the 1e30 that means none): sentence-transformers does not cut at
        # all; a table lookup has no position table to outgrow, so the static embedder's cap.
        limit = limit if isinstance(limit, int) and limit < STATIC_MAX_TOKENS else STATIC_MAX_TOKENS
        tokenizer = ModelTokenizer(folder / "tokenizer.json", limit, mode, special_tokens=False)
        return cls(tokenizer, np.asarray(weight, dtype=np.float32))

    def prepare(
        self, texts: list[str], *, truncate: bool = True, direction: str = "right"
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each text's untruncated token count, and its ids without special tokens cut to the
        limit on `direction`'s side; with `truncate=False` an InputTooLongError instead."""
        content = self.tokenizer.content_ids(texts)
        counts = np.fromiter((len(ids) for ids in content), dtype=np.int64, count=len(content))
        cut = [
            self.tokenizer.model_sequence(i, ids, truncate=truncate, direction=direction)
            for i, ids in enumerate(content)
        ]
        return counts, cut

    def vectors(self, sequences: Sequence[np.ndarray]) -> list[SparseVector]:
        out = []
        for ids in sequences:
            unique = np.unique(ids)
            values = self.weight[unique]
            keep = values != 0
            out.append(SparseVector(unique[keep], values[keep]))
        return out


class SparseEncoder(TextPreparer, Pretrained):
    """Texts → sparse vectors as sentence-transformers' SparseEncoder (SPLADE) or FlagEmbedding's
    BGE-M3 sparse head give them. Thread-safe: it holds no per-call state.

    `SparseEncoder.from_pretrained(spec, **options)` loads one (see loading.Pretrained): a
    `*ForMaskedLM` folder (its safetensors compiled with the MLM head and SPLADE pooling), or a
    BGE-M3 folder with `sparse_linear.pt`.
    """

    kind = SPARSE
    runs = Runs("sparse encoders", precisions=("fp32",), runtimes=("onnxruntime",))

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: ModelTokenizer,
        head: SparseHead,
        *,
        kind: str,
        vocab_size: int,
        max_batch_tokens: int | None = None,
        query: StaticQuery | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.head = head
        # The inference-free query side, if the model has one: queries run no model.
        self.query = query
        self.max_batch_tokens = max_batch_tokens or default_max_batch_tokens(head.provider)
        self.model_info = SparseInfo(
            name=config.name,
            head=kind,
            dimension=vocab_size,
            max_tokens=tokenizer.max_length,
            provider=head.provider,
            prompts=dict(config.prompts),
            inference_free_queries=query is not None,
            family=config.family,
        )

    @classmethod
    def graph(cls, plan: LoadPlan) -> Path:
        from embedserve.models.graph import compiled_onnx, onnx_for

        kind, directory, _ = _sparse_head(plan.model_dir)
        if kind == SPLADE:
            return compiled_onnx(directory, splade=True)
        return onnx_for(directory, compile=plan.options.compile)

    @classmethod
    def from_plan(cls, plan: LoadPlan) -> SparseEncoder:
        from embedserve.runtime.session import EncoderSession
        from embedserve.runtime.sparse_session import SparseSession

        kind, directory, layout = _sparse_head(plan.model_dir)
        hf = read_hf_config(directory)
        config_dir = plan.config_dir
        if layout is not None and config_dir == plan.model_dir:
            # An inference-free folder keeps the MLM (and its tokenizer) in a route's folder.
            config_dir = layout.document
        config = load_sparse_config(config_dir, plan.name, plan.config_dir)
        if plan.options.max_length is not None:
            max_length = check_max_length(directory, plan.options.max_length)
            config = replace(config, max_seq_length=max_length)
        tokenizer = ModelTokenizer(
            config_dir / "tokenizer.json", config.max_seq_length, plan.options.tokenizer_mode
        )
        head: SparseHead
        query = None
        if kind == SPLADE:
            assert layout is not None  # _sparse_head gives SPLADE's with it
            session = SparseSession(cls.graph(plan), plan.session_options)
            head = SpladeHead(session, layout.log1p_times)
            if layout.query is not None:
                query = StaticQuery.load(layout.query, plan.options.tokenizer_mode)
        else:
            weight, bias = read_linear(directory / SPARSE_LINEAR)
            dropped = [tokenizer.token_id(t) for t in dropped_special_tokens(config_dir)]
            head = BgeM3Head(
                EncoderSession(cls.graph(plan), plan.session_options),
                weight,
                bias,
                [i for i in dropped if i is not None],
            )
        vocab = int(hf.get("vocab_size") or tokenizer.vocab_size)
        return cls(
            config,
            tokenizer,
            head,
            kind=kind,
            vocab_size=vocab,
            max_batch_tokens=plan.max_batch_tokens(head.provider),
            query=query,
        )

    @classmethod
    def bge_m3_over(cls, engine: Engine) -> SparseEncoder | None:
        """BGE-M3's sparse head over an embedder of the same folder, sharing its encoder session
        (no second copy of the weights) and its tokenizer and limit; None where the embedder's
        session cannot serve it (a graph that pools on the device, a precision other than
        fp32, a runtime other than ONNX Runtime): load the folder on its own then."""
        from embedserve.runtime.session import EncoderSession

        session = engine.session
        directory = engine.config.directory
        if (
            not isinstance(session, EncoderSession)
            or session.pooled
            or engine.model_info.precision != "fp32"
            or not (directory / SPARSE_LINEAR).exists()
        ):
            return None
        config = replace(
            load_sparse_config(directory, engine.model_info.name),
            max_seq_length=engine.config.max_seq_length,
        )
        weight, bias = read_linear(directory / SPARSE_LINEAR)
        tokenizer = engine.tokenizer
        dropped = [tokenizer.token_id(t) for t in dropped_special_tokens(directory)]
        head = BgeM3Head(session, weight, bias, [i for i in dropped if i is not None])
        vocab = int(read_hf_config(directory).get("vocab_size") or tokenizer.vocab_size)
        return cls(
            config,
            tokenizer,
            head,
            kind=BGE_M3,
            vocab_size=vocab,
            max_batch_tokens=engine.max_batch_tokens,
        )

    # -- the steps, public so the server's batcher can run them separately --

    def forward(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """One padded batch's vectors as the batcher carries rows: an object array [n, 1]."""
        out = np.empty((len(sequences), 1), dtype=object)
        for row, vector in enumerate(self.head(sequences)):
            out[row, 0] = vector
        return out

    def vectors(self, sequences: Sequence[np.ndarray]) -> list[SparseVector]:
        """Vectors for any number of sequences, in their order, via length-sorted micro-batches."""
        out: list[SparseVector | None] = [None] * len(sequences)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        for group in plan_batches(lengths, self.max_batch_tokens):
            for i, vector in zip(group, self.head([sequences[i] for i in group])):
                out[int(i)] = vector
        return [v for v in out if v is not None]

    def pruned(
        self, vectors: Sequence[SparseVector], top_k: int | None, threshold: float | None
    ) -> list[SparseVector]:
        """`vectors` pruned as a call asks; with no `top_k`, the model's saved max_active_dims
        (a call's own `top_k` replaces it, larger or smaller, as in sentence-transformers)."""
        if top_k is None:
            top_k = self.config.max_active_dims
        return [prune(v, top_k, threshold) for v in vectors]

    def tokens(self, vector: SparseVector) -> list[str]:
        """The vocabulary's token for each index of `vector` ("##ing", "▁the")."""
        return self.tokenizer.token_strings(vector.indices.tolist())

    # -- the whole thing --

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        input_type: str | None = None,
    ) -> list[SparseVector]:
        """One sparse vector per text (a string is one text), pruned to the weights above
        `threshold` and then the `top_k` largest by magnitude if given (sentence-transformers'
        `max_active_dims`; the model's saved one when not given).

        `input_type` is sentence-transformers' `encode_query` ("query") or `encode_document`
        ("document"): with no `prompt_name`, the model's query or document prompt
        (`preparing.prompt_name_for`); queries take the inference-free query side where the
        model has one. None is its plain `encode`: the default prompt, the document side."""
        check_pruning(top_k, threshold)
        check_input_type(input_type)
        check_flag(truncate, "truncate")
        prompt_name = prompt_name_for(input_type, self.config.prompts, prompt_name)
        check_direction(truncation_direction)
        batch = text_batch(texts, "texts")
        if input_type == "query" and self.query is not None:
            _, ids = self.query.prepare(
                self.prompted(batch, prompt_name),
                truncate=truncate,
                direction=truncation_direction,
            )
            return self.pruned(self.query.vectors(ids), top_k, threshold)
        prepared = self.prepare(
            Inputs(texts=batch),
            truncate=truncate,
            truncation_direction=truncation_direction,
            prompt_name=prompt_name,
        )
        return self.pruned(self.vectors(prepared.sequences), top_k, threshold)


INPUT_TYPES = ("query", "document")


def _sparse_head(directory: Path) -> tuple[str, Path, SpladeLayout | None]:
    """Which head gives the folder's sparse vectors (SPLADE or BGE_M3), the folder of the
    encoder it runs, and a SPLADE folder's layout; a ModelConfigError for a folder with neither."""
    hf = read_hf_config(directory)
    layout = splade_layout(directory) if is_masked_lm(hf) or is_splade(directory) else None
    if layout is not None:
        directory, hf = layout.document, read_hf_config(layout.document)
    if layout is not None and is_masked_lm(hf):
        return SPLADE, directory, layout
    if is_bge_m3(directory) and (directory / SPARSE_LINEAR).exists():
        return BGE_M3, directory, layout
    raise ModelConfigError(
        f"{directory}: not a sparse model: config.json's architectures "
        f"{hf.get('architectures')} name no *ForMaskedLM head (SPLADE) and there is no "
        f"{SPARSE_LINEAR} beside it (BGE-M3)"
    )


def check_input_type(input_type: str | None) -> None:
    # A string first: `in` compares a NumPy array element-wise.
    if input_type is not None and (
        not isinstance(input_type, str) or input_type not in INPUT_TYPES
    ):
        raise InputError(
            f"input_type must be one of {INPUT_TYPES}, got {input_type!r}", param="input_type"
        )


def check_pruning(top_k: int | None, threshold: float | None) -> None:
    check_positive_int(top_k, "top_k")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, Real)  # NumPy's floats and integers too
        or not threshold >= 0  # NaN too: no weight is above it, so every vector would be empty
    ):
        raise InputError(f"threshold must be a number >= 0, got {threshold!r}", param="threshold")


def load_sparse_config(directory: Path, name: str, top: Path | None = None) -> ModelConfig:
    """Limit and prompts, as sentence-transformers reads them for a SparseEncoder folder (or a
    bare checkpoint; `top` is the model's folder when `directory` is a route's); the pooling
    fields say what the vectors are."""
    hf = read_hf_config(directory)
    st_path = (top or directory) / "config_sentence_transformers.json"
    st_config = read_json(st_path)
    st_config = st_config if isinstance(st_config, dict) else {}
    prompts, default_prompt_name = read_prompts(st_path, st_config)
    # Only SparseEncoder saves it (a BGE-M3 folder's config is its dense model's).
    max_active_dims = st_config.get("max_active_dims") if is_masked_lm(hf) else None
    if max_active_dims is not None and (
        isinstance(max_active_dims, bool)
        or not isinstance(max_active_dims, int)
        or max_active_dims < 1
    ):
        raise ModelConfigError(
            f"{st_path}: max_active_dims must be a positive integer or null, "
            f"got {max_active_dims!r}"
        )
    return ModelConfig(
        name=name,
        directory=directory,
        max_seq_length=max_seq_length(directory, hf),
        pooling="splade" if is_masked_lm(hf) else "bge-m3-sparse",
        normalize=False,
        dimension=hf.get("vocab_size"),
        prompts=prompts,
        default_prompt_name=default_prompt_name,
        architecture=(hf.get("architectures") or [None])[0],
        family=model_family(directory),
        max_active_dims=max_active_dims,
    )
