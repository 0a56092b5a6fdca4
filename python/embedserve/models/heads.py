"""Sequence-classification heads for cross-encoders, on the layer library.

Each is the eval-mode head of transformers' `<Family>ForSequenceClassification` (dropout is the
identity), appended to the family's encoder by `compiler.build_model(..., head=...)`; the graph
then ends in `logits` [batch, num_labels] instead of the hidden states.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from embedserve.models.architectures import Encoded, family_for
from embedserve.models.compiler import Head, Output
from embedserve.models.hf_config import HFConfig, UnsupportedArchitectureError
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import activation, check_activation, linear
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

LOGITS = "logits"


def num_labels(c: HFConfig) -> int:
    # transformers' default is two labels: a config.json that names none has two (transformers 5
    # leaves id2label out of a two-label config.json).
    id2label = c.get("id2label") or {}
    return int(c.get("num_labels") or len(id2label) or 2)


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


def _logits(
    g: GraphBuilder,
    w: Weights,
    prefix: str,
    x: str,
    c: HFConfig,
    hidden: int,
    bias: bool | None = True,
) -> Output:
    labels = num_labels(c)
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
}


def classifier_head(c: HFConfig) -> Head:
    """The head of `c`'s *ForSequenceClassification, or an error naming the families that have one."""
    family = family_for(c)
    if family.name not in HEADS:
        raise UnsupportedArchitectureError(
            f"{c.path}: {family.name} has no sequence-classification head here; cross-encoders "
            f"can be compiled for {', '.join(sorted(HEADS))}"
        )
    return HEADS[family.name]
