"""SPLADE on a `*ForMaskedLM` checkpoint: the family's MLM head, then a masked max over the
sequence, and only the non-zero (row, token id, value) triples leave the graph.

sentence-transformers' SparseEncoder (MLMTransformer + SpladePooling) computes, per row,
`max_s log1p(relu(logits[s] * mask[s]))`. log1p and relu are monotonic, so that equals
`log1p(relu(max_s(logits[s] * mask[s])))`: the graph takes the max of the masked logits, applies
relu, and hands out the non-zero entries of the [batch, vocab] result through NonZero/GatherND
(`SPARSE_INDICES` int64 [2, nnz] as (row, token id), row-major; `SPARSE_VALUES` float32 [nnz]).
The caller applies log1p to those few values (`sparse.splade_values`), in float32 as torch does,
so the [batch, vocab] matrix never leaves ONNX Runtime and log is taken nnz times, not
batch x sequence x vocab times.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from embedserve.models.architectures import Encoded, by_family
from embedserve.models.compiler import Head, Output
from embedserve.models.hf_config import HFConfig
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.linear import activation, check_activation, linear
from embedserve.models.layers.norms import layer_norm
from embedserve.models.weights import Weights

SPARSE_INDICES = "sparse_indices"
SPARSE_VALUES = "sparse_values"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def _decoder(
    g: GraphBuilder, w: Weights, x: str, c: HFConfig, hidden: int, weight: str, bias: str
) -> str:
    """The vocabulary projection: its own weight if the checkpoint has one, else the word
    embeddings it is tied to (transformers' default), plus the output bias."""
    vocab = c.int("vocab_size")
    table = w.get(weight if w.has(weight) else WORD_EMBEDDINGS, (vocab, hidden))
    logits = g.op("MatMul", [x, g.weight("mlm/decoder.weight_t", table.T)], "mlm/decoder")
    return g.op("Add", [logits, g.weight("mlm/decoder.bias", w.get(bias, (vocab,)))], "mlm/bias")


def bert_mlm(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> str:
    """BertOnlyMLMHead: transform (dense, hidden_act, LayerNorm), decoder tied to the embeddings."""
    h = encoded.hidden_size
    x = linear(g, w, "cls.predictions.transform.dense", encoded.hidden, "mlm/dense", (h, h))
    x = activation(g, check_activation(c.get("hidden_act", default="gelu"), c.path), x, "mlm/act")
    x = layer_norm(
        g,
        w,
        "cls.predictions.transform.LayerNorm",
        x,
        "mlm/norm",
        h,
        c.float("layer_norm_eps", default=1e-12),
    )
    bias = "cls.predictions.bias"
    if not w.has(bias):
        bias = "cls.predictions.decoder.bias"
    return _decoder(g, w, x, c, h, "cls.predictions.decoder.weight", bias)


def distilbert_mlm(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> str:
    """DistilBertForMaskedLM: vocab_transform, activation, vocab_layer_norm, vocab_projector."""
    h = encoded.hidden_size
    x = linear(g, w, "vocab_transform", encoded.hidden, "mlm/dense", (h, h))
    x = activation(g, check_activation(c.get("activation", default="gelu"), c.path), x, "mlm/act")
    x = layer_norm(g, w, "vocab_layer_norm", x, "mlm/norm", h, 1e-12)
    return _decoder(g, w, x, c, h, "vocab_projector.weight", "vocab_projector.bias")


def roberta_mlm(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> str:
    """RobertaLMHead (XLM-R's too): dense, exact GELU, layer_norm, decoder + bias."""
    h = encoded.hidden_size
    x = linear(g, w, "lm_head.dense", encoded.hidden, "mlm/dense", (h, h))
    x = activation(g, "gelu", x, "mlm/act")
    eps = c.float("layer_norm_eps", default=1e-5)
    x = layer_norm(g, w, "lm_head.layer_norm", x, "mlm/norm", h, eps)
    bias = "lm_head.bias" if w.has("lm_head.bias") else "lm_head.decoder.bias"
    return _decoder(g, w, x, c, h, "lm_head.decoder.weight", bias)


MLM_HEADS = {"bert": bert_mlm, "distilbert": distilbert_mlm, "roberta": roberta_mlm}


def splade_head(c: HFConfig) -> Head:
    """The family's MLM head followed by SPLADE's masked max, as sparse (index, value) outputs."""
    mlm = by_family(c, MLM_HEADS, "masked-LM head", "SPLADE models")

    def head(g: GraphBuilder, c: HFConfig, w: Weights, encoded: Encoded) -> tuple[Output, ...]:
        logits = mlm(g, c, w, encoded)
        mask = g.op("Cast", [g.input("attention_mask")], "splade/mask", to=TensorProto.FLOAT)
        mask = g.op("Unsqueeze", [mask, g.const([-1], np.int64)], "splade/mask_3d")
        masked = g.op("Mul", [logits, mask], "splade/masked")
        # opset 17: ReduceMax still takes its axes as an attribute.
        pooled = g.op("ReduceMax", [masked], "splade/max", axes=[1], keepdims=0)
        pooled = g.op("Relu", [pooled], "splade/relu")
        where = g.op("NonZero", [pooled], "splade/nonzero")
        g.op("Identity", [where], SPARSE_INDICES, output=SPARSE_INDICES)
        pairs = g.op("Transpose", [where], "splade/pairs", perm=[1, 0])
        g.op("GatherND", [pooled, pairs], SPARSE_VALUES, output=SPARSE_VALUES)
        return (
            Output(SPARSE_INDICES, (2, "nnz"), TensorProto.INT64),
            Output(SPARSE_VALUES, ("nnz",)),
        )

    return head
