"""BERT through the layer-library compiler, against sentence-transformers and a NumPy BERT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from embedserve.models import compiler
from embedserve.models.compiler import UnsupportedArchitectureError
from embedserve.models.compiler import compile_to_onnx as compile_bert_to_onnx
from safetensors.numpy import save_file
from tokenizers import Tokenizer

BATCH = 32
COSINE = 0.99999


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(
    session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray, types: np.ndarray
) -> np.ndarray:
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    (hidden,) = session.run(["last_hidden_state"], feeds)
    return hidden


def _pad(rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _embed(session: ort.InferenceSession, encodings: list) -> np.ndarray:
    """Mask-aware mean pooling of last_hidden_state, one padded batch at a time."""
    # Batching texts of similar length keeps padding, and so the test's run time, small.
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    pooled = []
    for start in range(0, len(encodings), BATCH):
        batch = [encodings[i] for i in order[start : start + BATCH]]
        ids = _pad([e.ids for e in batch])
        mask = _pad([e.attention_mask for e in batch])
        types = _pad([e.type_ids for e in batch])
        hidden = _run(session, ids, mask, types)
        weights = mask[..., None].astype(np.float32)
        pooled.append((hidden * weights).sum(axis=1) / weights.sum(axis=1))
    result = np.empty((len(encodings), pooled[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(pooled)
    return result


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(axis=1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)


@pytest.fixture(scope="module")
def compiled(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_bert_to_onnx(minilm_dir, tmp_path_factory.mktemp("minilm") / "model.onnx")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    # tokenizer.json ships padding and truncation fixed at 128; the model's limit is 256.
    tok.no_padding()
    tok.enable_truncation(256)
    return tok


# --- all-MiniLM-L6-v2 against sentence-transformers -----------------------------------


def test_graph_signature(compiled: Path) -> None:
    model = onnx.load(str(compiled))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    for value in model.graph.input:
        tensor = value.type.tensor_type
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    (output,) = model.graph.output
    assert output.name == "last_hidden_state"
    dims = output.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "sequence", 384]
    # pooler / position_ids from the checkpoint are not carried along as dead weight.
    assert not any(i.name.startswith("pooler.") for i in model.graph.initializer)
    assert not list(compiled.parent.glob("*.tmp"))


def test_matches_sentence_transformers(
    compiled: Path, tokenizer: Tokenizer, reference: dict
) -> None:
    encodings = tokenizer.encode_batch(reference["texts"])
    assert [len(e.ids) for e in encodings] == reference["tokens_truncated"]

    pooled = _embed(_session(compiled), encodings)

    # all-MiniLM-L6-v2 ends in a Normalize module, so even "unnormalized" is unit length:
    # compare directions, then the normalized vectors value by value.
    cosines = _cosines(pooled, reference["unnormalized"])
    assert cosines.min() >= COSINE, f"worst text {int(cosines.argmin())}: cosine {cosines.min()}"
    normalized = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    assert _cosines(normalized, reference["normalized"]).min() >= COSINE
    np.testing.assert_allclose(normalized, reference["normalized"], atol=1e-5)


def test_padding_does_not_change_a_text(
    compiled: Path, tokenizer: Tokenizer, reference: dict
) -> None:
    session = _session(compiled)
    lengths = np.asarray(reference["tokens_truncated"])
    # the shortest, the longest (256, truncated) and one in between, padded together
    picks = [
        int(lengths.argmin()),
        int(lengths.argmax()),
        int(np.argsort(lengths)[len(lengths) // 2]),
    ]
    encodings = tokenizer.encode_batch([reference["texts"][i] for i in picks])
    together = _embed(session, encodings)
    alone = np.concatenate([_embed(session, [e]) for e in encodings])
    assert _cosines(together, alone).min() >= COSINE


# --- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"architectures": ["LongformerModel"], "model_type": "longformer"}, "LongformerModel"),
        ({"architectures": ["BartModel"], "model_type": "bart"}, "BartModel"),
        ({"architectures": ["BartModel"]}, "BartModel"),
        ({"model_type": "bert", "position_embedding_type": "relative_key"}, "relative_key"),
        ({"model_type": "bert", "hidden_act": "mish"}, "mish"),
    ],
)
def test_refuses_what_it_cannot_compile(tmp_path: Path, config: dict, named: str) -> None:
    full = {**_tiny_config("gelu"), **config}
    if "model_type" not in config:
        del full["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(full))
    with pytest.raises(UnsupportedArchitectureError, match=named) as caught:
        compile_bert_to_onnx(tmp_path, tmp_path / "model.onnx")
    assert "BertModel" in str(caught.value) or "supported" in str(caught.value)
    assert not (tmp_path / "model.onnx").exists()


def test_missing_weights_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_tiny_config("gelu")))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "model.safetensors")):
        compile_bert_to_onnx(tmp_path, tmp_path / "model.onnx")


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    config = _tiny_config("gelu")
    weights = _tiny_weights(config, np.random.default_rng(0))
    del weights["encoder.layer.1.output.dense.bias"]
    _write_model(tmp_path, config, weights)
    with pytest.raises(ValueError, match="encoder.layer.1.output.dense.bias"):
        compile_bert_to_onnx(tmp_path, tmp_path / "model.onnx")


# --- small random BERTs against a NumPy implementation of transformers' BertModel --------


def _tiny_config(hidden_act: str) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 48,
        "max_position_embeddings": 16,
        "type_vocab_size": 2,
        "vocab_size": 50,
        "layer_norm_eps": 1e-12,
        "hidden_act": hidden_act,
        "position_embedding_type": "absolute",
    }


def _tiny_weights(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    h, i = config["hidden_size"], config["intermediate_size"]

    def rand(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.3, shape).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": rand(config["vocab_size"], h),
        "embeddings.position_embeddings.weight": rand(config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": rand(config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": 1 + rand(h),
        "embeddings.LayerNorm.bias": rand(h),
    }
    for n in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        for name, out_dim, in_dim in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ]:
            w[f"{p}{name}.weight"] = rand(out_dim, in_dim)
            w[f"{p}{name}.bias"] = rand(out_dim)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}{norm}.weight"] = 1 + rand(h)
            w[f"{p}{norm}.bias"] = rand(h)
    return w


def _write_model(directory: Path, config: dict, weights: dict[str, np.ndarray]) -> None:
    (directory / "config.json").write_text(json.dumps(config))
    save_file(weights, str(directory / "model.safetensors"))


def _numpy_bert(
    config: dict, w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, types: np.ndarray
) -> np.ndarray:
    """transformers' BertModel forward in eval mode, in float64."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    heads = config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def dense(x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    def act(x: np.ndarray) -> np.ndarray:
        kind = config["hidden_act"]
        if kind == "relu":
            return np.maximum(x, 0.0)
        if kind == "silu":
            return x / (1.0 + np.exp(-x))
        if kind == "quick_gelu":
            return x / (1.0 + np.exp(-1.702 * x))
        if kind == "gelu":
            return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def split(x: np.ndarray) -> np.ndarray:
        b, s, h = x.shape
        return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)

    seq = ids.shape[1]
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.token_type_embeddings.weight"][types]
        + w["embeddings.position_embeddings.weight"][np.arange(seq)]
    )
    x = norm(x, "embeddings.LayerNorm")
    extended = (1.0 - mask[:, None, None, :]) * np.finfo(np.float32).min
    for n in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{n}."
        q, k, v = (
            split(dense(x, f"{p}attention.self.{part}")) for part in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + extended
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = norm(dense(context, f"{p}attention.output.dense") + x, f"{p}attention.output.LayerNorm")
        inner = act(dense(x, f"{p}intermediate.dense"))
        x = norm(dense(inner, f"{p}output.dense") + x, f"{p}output.LayerNorm")
    return x


def _tiny_inputs(
    rng: np.random.Generator, config: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch, seq = 3, config["max_position_embeddings"]
    ids = rng.integers(0, config["vocab_size"], (batch, seq), dtype=np.int64)
    types = rng.integers(0, config["type_vocab_size"], (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1, 5:] = 0
    mask[2, :] = 0  # fully masked: transformers attends uniformly; must stay finite
    return ids, mask, types


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu", "silu", "quick_gelu"])
def test_random_bert_matches_numpy(tmp_path: Path, hidden_act: str) -> None:
    rng = np.random.default_rng(7)
    config = _tiny_config(hidden_act)
    weights = _tiny_weights(config, rng)
    # A BertForMaskedLM-style checkpoint: "bert." prefix, an MLM head, a pooler, a buffer.
    stored = {f"bert.{k}": v for k, v in weights.items()}
    stored["bert.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None, :]
    stored["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    stored["cls.predictions.bias"] = np.zeros(50, np.float32)
    _write_model(tmp_path, {**config, "architectures": ["BertForMaskedLM"]}, stored)

    session = _session(compile_bert_to_onnx(tmp_path, tmp_path / "out" / "model.onnx"))
    ids, mask, types = _tiny_inputs(rng, config)
    for seq in (1, 7, config["max_position_embeddings"]):  # dynamic sequence length
        got = _run(session, ids[:, :seq], mask[:, :seq], types[:, :seq])
        want = _numpy_bert(config, weights, ids[:, :seq], mask[:, :seq], types[:, :seq])
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_float16_weights_and_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the model is past protobuf's 2 GiB limit, to exercise the external-data path.
    monkeypatch.setattr(compiler, "MAX_INLINE_BYTES", 0)
    rng = np.random.default_rng(3)
    config = _tiny_config("gelu")
    weights = {k: v.astype(np.float16) for k, v in _tiny_weights(config, rng).items()}
    _write_model(tmp_path, config, weights)

    out = compile_bert_to_onnx(tmp_path, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx.data").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.onnx",
        "model.onnx.data",
        "model.safetensors",
    ]
    onnx.checker.check_model(str(out))
    ids, mask, types = _tiny_inputs(rng, config)
    got = _run(_session(out), ids, mask, types)
    want = _numpy_bert(
        config, {k: v.astype(np.float32) for k, v in weights.items()}, ids, mask, types
    )
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
