"""Sequence classification: texts or text pairs → each label's score, as transformers'
`pipeline("text-classification", top_k=None)` gives them.

The scores' function is the pipeline's: none for `problem_type: regression`, a sigmoid per label
for `multi_label_classification` or a one-logit head, a softmax over the labels otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from embedserve.errors import InputError
from embedserve.inputs import check_flag, check_positive_int
from embedserve.pairs import Pair, PreparedPairs
from embedserve.reranker import Reranker, _check_texts, check_string
from embedserve.scoring import FUNCTIONS, NONE, SIGMOID, SOFTMAX, apply_function
from embedserve.tokenization import check_direction

__all__ = [
    "FUNCTIONS",
    "NONE",
    "SIGMOID",
    "SOFTMAX",
    "Classifier",
    "Label",
    "LlmRerankerTextError",
    "apply_function",
    "check_single_texts",
    "check_truncation_direction",
    "default_function",
    "model_function",
    "probabilities",
    "sorted_labels",
]

# One input: a text, or a (first, second) pair read as the tokenizer's pair template.
TextOrPair = str | tuple[str, str]


@dataclass(frozen=True)
class Label:
    """One label's score for one input."""

    label: str
    score: float


def default_function(num_labels: int, problem_type: str | None) -> str:
    """What transformers' text-classification pipeline applies to a model's logits."""
    if problem_type == "regression":
        return NONE
    if problem_type == "multi_label_classification" or num_labels == 1:
        return SIGMOID
    return SOFTMAX


def model_function(model: Reranker) -> str:
    """The function a model's logits get unless a call names one: `default_function` of its head
    (the pipeline reads no sentence-transformers activation; `Reranker.scores` does)."""
    return default_function(model.model_info.num_labels, model.config.problem_type)


def probabilities(model: Reranker, logits: np.ndarray, function: str | None = None) -> np.ndarray:
    """[n, labels] scores from a model's logits: `function`, or the model's own."""
    return apply_function(logits, function or model_function(model))


class LlmRerankerTextError(InputError):
    code = "wrong_model_kind"


def check_single_texts(model: Reranker, param: str = "inputs") -> None:
    """Refuse single texts for an LLM reranker: it judges a query and a document, and a text alone
    (no prompt around it) is nothing it was asked, so its yes/no softmax would mean nothing."""
    if model.config.yes_no:
        raise LlmRerankerTextError(
            f"The model `{model.config.name}` is an LLM reranker: it scores (query, document) "
            "pairs, not single texts; send pairs",
            param=param,
        )


def check_truncation_direction(direction: object, pairs: bool) -> None:
    """A direction is one of DIRECTIONS; pairs are cut longest side first from the right (the
    tokenizer's `longest_first`, as CrossEncoder and the pipeline cut them), so they take only
    "right"."""
    check_direction(direction)
    if pairs and direction != "right":
        raise InputError(
            "truncation_direction must be 'right' for pairs: they are cut longest side first, "
            f"from the right, as the model was trained; got {direction!r}",
            param="truncation_direction",
        )


def sorted_labels(
    labels: Sequence[str], scores: np.ndarray, top_k: int | None = None
) -> list[Label]:
    """One input's labels, best score first (ties keep the labels' order), at most `top_k`."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [Label(labels[i], float(scores[i])) for i in order]


class Classifier(Reranker):
    """A `*ForSequenceClassification` model as a classifier of texts and text pairs (the same
    graph, tokenizer and batching as `Reranker`, which it is too).

    `Classifier.from_pretrained(spec, **options)` loads one (loading.Pretrained, LoadOptions).
    """

    @property
    def function(self) -> str:
        """The function applied to logits unless a call names one (`model_function`)."""
        return model_function(self)

    def prepare_texts(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        truncation_direction: str = "right",
        param: str = "inputs",
    ) -> PreparedPairs:
        """Single texts as the model sees them (the tokenizer's specials around each); an error
        about one text names it `param[index]`."""
        check_single_texts(self, param)
        check_truncation_direction(truncation_direction, pairs=False)
        items = _check_texts(texts, param)
        ids = self.tokenizer.content_ids(items) if items else []
        return self.tokenizer.prepare_singles(
            ids, truncate=truncate, direction=truncation_direction, param=param
        )

    def probabilities(self, logits: np.ndarray, function: str | None = None) -> np.ndarray:
        """[n, labels] scores from logits: `function`, or the model's own (`self.function`)."""
        return probabilities(self, logits, function)

    def predict(
        self,
        inputs: str | Sequence[TextOrPair],
        *,
        raw_scores: bool = False,
        function: str | None = None,
        truncate: bool = True,
        truncation_direction: str = "right",
        top_k: int | None = None,
    ) -> list[list[Label]]:
        """Each input's labels, best first: texts alone, or (first, second) pairs (a string is
        one text); `raw_scores` gives the logits (function "none"); `top_k` keeps the best k."""
        check_positive_int(top_k, "top_k")
        check_flag(truncate, "truncate")
        check_flag(raw_scores, "raw_scores")
        pairs = self._prepare_inputs(inputs, truncate, truncation_direction)
        scores = self.probabilities(self.logits(pairs), NONE if raw_scores else function)
        labels = self.model_info.labels
        return [sorted_labels(labels, row, top_k) for row in scores]

    def _prepare_inputs(
        self, inputs: str | Sequence[TextOrPair], truncate: bool, direction: str
    ) -> list[Pair]:
        if isinstance(inputs, str):
            inputs = [inputs]
        # A generator would be read up by the first pass below and give nothing to the next.
        if not isinstance(inputs, Sequence):
            raise InputError(
                "inputs must be a string or an array of strings and (first, second) pairs, "
                f"not {type(inputs).__name__}",
                param="inputs",
            )
        singles = [i for i, item in enumerate(inputs) if isinstance(item, str)]
        doubles = [i for i, item in enumerate(inputs) if not isinstance(item, str)]
        check_truncation_direction(direction, pairs=bool(doubles))
        for i in doubles:
            item = inputs[i]
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise InputError(
                    f"inputs[{i}] must be a string or a pair of strings", index=i, param="inputs"
                )
            for side, text in enumerate(item):
                check_string(text, f"inputs[{i}][{side}]", "inputs", i)
        out: list[Pair | None] = [None] * len(inputs)
        if singles:
            with _named_by(singles):
                prepared = self.prepare_texts(
                    [inputs[i] for i in singles],  # type: ignore[misc]
                    truncate=truncate,
                    truncation_direction=direction,
                )
            for i, pair in zip(singles, prepared.pairs):
                out[i] = pair
        if doubles:
            with _named_by(doubles):
                prepared = self.prepare_pairs(
                    [inputs[i][0] for i in doubles],
                    [inputs[i][1] for i in doubles],
                    truncate=truncate,
                    param="inputs",
                )
            for i, pair in zip(doubles, prepared.pairs):
                out[i] = pair
        return [pair for pair in out if pair is not None]


@contextmanager
def _named_by(positions: list[int]) -> Iterator[None]:
    """Errors about the texts (or the pairs) of a mixed `inputs`, which are prepared apart, name
    their position in `inputs`, not in their part: `inputs[3]`, not `inputs[0]`."""
    try:
        yield
    except InputError as error:
        if error.index is None:
            raise
        where, original = f"inputs[{error.index}]", positions[error.index]
        error.args = (str(error).replace(where, f"inputs[{original}]", 1), *error.args[1:])
        error.index = original
        raise
