"""Sequence-classification heads for cross-encoders, on the layer library.

Each is the eval-mode head of transformers' `<Family>ForSequenceClassification` (dropout is the
identity), appended to the family's encoder by `compiler.build_model(..., head=...)`; the graph
then ends in `logits` [batch, num_labels] instead of the hidden states.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from embedserve.models.architectures import Encoded, by_family
from embedserve.models.compiler import Head, Output
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import activation, check_activation, linear
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

LOGITS = "logits"


def num_labels(c: HFConfig, w: Weights, prefix: str) -> int:
    """The labels config.json names; if it names none, the classifier's rows. (transformers would
    read two, its default, which a two-label config.json leaves out; a remote-code config class
    may have a default of its own.)"""
    id2label = c.get("id2label") or {}
    named = c.get("num_labels") or len(id2label)
    return int(named) if named else int(w.get(prefix + ".weight").shape[0])


def _first_token(g: GraphBuilder, hidden: str) -> str:
    """The [CLS] / <s> state: position 0 of every row."""
    return g.op("Gather", [hidden, g.const(0, np.int64)], "head/first_token", axis=1)


def _masked_mean(g: GraphBuilder, hidden: str) -> str:
    """Mean of the hidden states over the real (unpadded) tokens."""
    mask = g.op("Cast", [g.input("attention_mask")], "head/mask", to=TensorProto.FLOAT)
    weights = g.op("Unsqueeze", [mask, g.const([-1], np.int64)], "head/mask_3d")
    summed = g.op(
        "ReduceSum",
        [g.op("Mul", [hidden, weights], "head/masked"), g.const([1], np.int64)],
        "head/sum",
        keepdims=0,
    )
    count = g.op("ReduceSum", [mask, g.const([1], np.int64)], "head/count", keepdims=1)
    return g.op("Div", [summed, count], "head/mean")


def _last_token(g: GraphBuilder, hidden: str) -> str:
    """The state of each row's last present token (a decoder's summary of the whole text), by a
    one-hot weighted sum: no dynamic gather index, and right or left padding alike."""
    mask = g.op("Cast", [g.input("attention_mask")], "head/mask_f64", to=TensorProto.DOUBLE)
    seq = g.op(
        "Gather",
        [g.op("Shape", [g.input("attention_mask")], "head/shape"), g.const(1, np.int64)],
        "head/seq",
        axis=0,
    )
    positions = g.op("Range", [g.const(0, np.int64), seq, g.const(1, np.int64)], "head/positions")
    # Ranks 1..n in float64, exact for any length; masked ranks are 0, so ArgMax finds the last.
    rank = g.op(
        "Add",
        [
            g.op("Cast", [positions], "head/positions_f", to=TensorProto.DOUBLE),
            g.const(1.0, np.float64),
        ],
        "head/rank",
    )
    last = g.op(
        "ArgMax", [g.op("Mul", [mask, rank], "head/ranked")], "head/last", axis=1, keepdims=1
    )
    chosen = g.op(
        "Cast",
        [g.op("Equal", [positions, last], "head/is_last")],
        "head/chosen",
        to=TensorProto.FLOAT,
    )
    weights = g.op("Unsqueeze", [chosen, g.const([2], np.int64)], "head/chosen_3d")
    return g.op(
        "ReduceSum",
        [g.op("Mul", [hidden, weights], "head/selected"), g.const([1], np.int64)],
        "head/last_token",
        keepdims=0,
    )


def _logits(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    x: str,
    c: HFConfig,
    hidden: int,
    bias: bool | None = True,
) -> Output:
    labels = num_labels(c, w, prefix)
    out = linear(g, w, prefix, x, "head/classifier", (labels, hidden), bias)
    g.op("Identity", [out], LOGITS, output=LOGITS)
    return Output(LOGITS, ("batch", labels))


def bert_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """BertPooler (dense + tanh on [CLS]), then `classifier`."""
    h = encoded.hidden_size
    x = linear(g, w, "pooler.dense", _first_token(g, encoded.hidden), "head/pooler", (h, h))
    return _logits(g, w, "classifier", g.op("Tanh", [x], "head/pooler_tanh"), c, h)


def roberta_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """RobertaClassificationHead (and MPNet's): dense + tanh on <s>, then `out_proj`."""
    h = encoded.hidden_size
    x = linear(g, w, "classifier.dense", _first_token(g, encoded.hidden), "head/dense", (h, h))
    return _logits(g, w, "classifier.out_proj", g.op("Tanh", [x], "head/tanh"), c, h)


def distilbert_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """`pre_classifier` + ReLU on [CLS], then `classifier`."""
    h = encoded.hidden_size
    x = linear(
        g, w, "pre_classifier", _first_token(g, encoded.hidden), "head/pre_classifier", (h, h)
    )
    return _logits(g, w, "classifier", g.op("Relu", [x], "head/relu"), c, h)


def modernbert_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """[CLS] or masked mean (`classifier_pooling`), ModernBertPredictionHead (dense, activation,
    norm), then `classifier`."""
    h = encoded.hidden_size
    pooling = c.choice("classifier_pooling", ("cls", "mean"), "cls")
    x = _first_token(g, encoded.hidden) if pooling == "cls" else _masked_mean(g, encoded.hidden)
    act = check_activation(c.get("classifier_activation", default="gelu"), c.path)
    x = linear(
        g, w, "head.dense", x, "head/dense", (h, h), bool(c.get("classifier_bias", default=False))
    )
    x = activation(g, act, x, "head/activation")
    x = layer_norm(
        g,
        w,
        "head.norm",
        x,
        "head/norm",
        h,
        c.float("norm_eps", default=1e-5),
        bias=bool(c.get("norm_bias", default=False)),
    )
    return _logits(g, w, "classifier", x, c, h)


def deberta_v2_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """ContextPooler (dense + `pooler_hidden_act` on [CLS]), then `classifier`."""
    h = encoded.hidden_size
    size = c.int("pooler_hidden_size", default=h)
    if size != h:
        raise UnsupportedArchitectureError(
            f"{c.path}: pooler_hidden_size {size} differs from hidden_size {h}"
        )
    act = check_activation(c.get("pooler_hidden_act", default="gelu"), c.path)
    x = linear(g, w, "pooler.dense", _first_token(g, encoded.hidden), "head/pooler", (h, h))
    return _logits(g, w, "classifier", activation(g, act, x, "head/pooler_activation"), c, h)


def causal_head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
    """Qwen2/Qwen3ForSequenceClassification: `score` (no bias) on the last present token, where
    transformers takes the last token that is not `pad_token_id`."""
    h = encoded.hidden_size
    return _logits(g, w, "score", _last_token(g, encoded.hidden), c, h, bias=None)


def yes_no_head(no_id: int, yes_id: int) -> Head:
    """A causal LM judging relevance (Qwen3-Reranker): the "no" and "yes" logits of the next token
    after the last present one. Only those two rows of the LM head enter the graph, and only the
    last position is multiplied: never the whole vocabulary, never every token."""

    def head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> Output:
        h = encoded.hidden_size
        # A tied LM head (small Qwen3 models) is the token embedding itself.
        name = "lm_head.weight" if w.has("lm_head.weight") else "embed_tokens.weight"
        rows = w.get(name)[[no_id, yes_id]]
        if rows.shape != (2, h):
            raise ValueError(f"{c.path}: {name} rows are {rows.shape}, expected (2, {h})")
        table = g.weight("head/no_yes_rows_t", np.ascontiguousarray(rows.T, dtype=np.float32))
        out = g.op("MatMul", [_last_token(g, encoded.hidden), table], "head/no_yes")
        g.op("Identity", [out], LOGITS, output=LOGITS)
        return Output(LOGITS, ("batch", 2))

    return head


HEADS: dict[str, Head] = {
    "bert": bert_head,
    "roberta": roberta_head,
    "mpnet": roberta_head,
    "distilbert": distilbert_head,
    "modernbert": modernbert_head,
    # JinaBertForSequenceClassification (jina-reranker-v1) and NewForSequenceClassification
    # (gte-multilingual-reranker-base): their remote code keeps BERT's pooler + classifier.
    "jina_bert": bert_head,
    "gte": bert_head,
    "deberta-v2": deberta_v2_head,
    "qwen3": causal_head,
}


def classifier_head(c: HFConfig) -> Head:
    """The head of `c`'s *ForSequenceClassification, or an error naming the families that have one."""
    return by_family(c, HEADS, "sequence-classification head", "cross-encoders")
