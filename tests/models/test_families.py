"""Every supported family, as a tiny random-weight transformers model, compiled by embedserve
and compared with sentence-transformers' encode() on real texts of mixed lengths."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine

from tests.support.tiny import Recipe, build, quiet, reference, rewrite

COSINE = 0.99999
N_TEXTS = 28

# Small enough to build in a second, large enough for several heads, layers and windows.
ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 48,
}

RECIPES = {
    "bert": Recipe(
        "bert",
        "bert",
        {**ENCODER, "max_position_embeddings": 64, "vocab_size": 30522},
        pooling="mean",
        normalize=True,
        max_seq_length=48,
    ),
    "xlm-roberta": Recipe(
        "xlm-roberta",
        "xlm-roberta",
        {
            **ENCODER,
            "max_position_embeddings": 66,
            "vocab_size": 250002,
            "type_vocab_size": 1,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
            "hidden_act": "gelu_new",
        },
        pooling="cls",
        normalize=False,
        max_seq_length=64,
        tokenizer="xlmr",
        exact_in="bfloat16",
    ),
    "distilbert": Recipe(
        "distilbert",
        "distilbert",
        {
            "dim": 32,
            "n_layers": 2,
            "n_heads": 4,
            "hidden_dim": 48,
            "vocab_size": 30522,
            "max_position_embeddings": 64,
        },
        pooling="mean",
        normalize=False,
        max_seq_length=40,
    ),
    # Distances past 128 reach MPNet's last, clamped relative-position bucket.
    "mpnet": Recipe(
        "mpnet",
        "mpnet",
        {**ENCODER, "max_position_embeddings": 514, "vocab_size": 30522},
        pooling="mean",
        normalize=True,
        max_seq_length=200,
        model_class="MPNetForMaskedLM",
    ),
    # Global attention in layer 0, then two local layers that see 4 tokens either side.
    "modernbert": Recipe(
        "modernbert",
        "modernbert",
        {
            **ENCODER,
            "num_hidden_layers": 3,
            "max_position_embeddings": 128,
            "vocab_size": 30522,
            "pad_token_id": 0,
            "bos_token_id": 101,
            "eos_token_id": 102,
            "cls_token_id": 101,
            "sep_token_id": 102,
            "local_attention": 8,
            "global_attn_every_n_layers": 3,
        },
        pooling="mean",
        normalize=True,
        max_seq_length=64,
    ),
    # GQA (4 query heads over 2 kv heads), head_dim 16 so heads * head_dim != hidden_size.
    "qwen3": Recipe(
        "qwen3",
        "qwen3",
        {
            **ENCODER,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 128,
            "vocab_size": 30522,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
        },
        pooling="lasttoken",
        normalize=True,
        max_seq_length=48,
        exact_in="float16",
    ),
    # Qwen2 with its causal sliding window (8 tokens) in layer 1, full attention in layer 0.
    "qwen2": Recipe(
        "qwen2",
        "qwen2",
        {
            **ENCODER,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
            "vocab_size": 30522,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "use_sliding_window": True,
            "sliding_window": 8,
            "max_window_layers": 1,
        },
        pooling="lasttoken",
        normalize=False,
        max_seq_length=48,
    ),
    # Llama 3.1's rope scaling (an original context of 16 puts frequencies in all three of its
    # bands), GQA, and the attention/MLP biases some Llama derivatives switch on.
    "llama": Recipe(
        "llama",
        "llama",
        {
            **ENCODER,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
            "vocab_size": 30522,
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            "attention_bias": True,
            "mlp_bias": True,
            "tie_word_embeddings": False,
        },
        pooling="lasttoken",
        normalize=True,
        max_seq_length=48,
    ),
    # Mistral's causal sliding window (8 tokens) in every layer.
    "mistral": Recipe(
        "mistral",
        "mistral",
        {
            **ENCODER,
            "num_key_value_heads": 1,
            "max_position_embeddings": 128,
            "vocab_size": 30522,
            "rope_theta": 10000.0,
            "sliding_window": 8,
            "tie_word_embeddings": False,
        },
        pooling="lasttoken",
        normalize=True,
        max_seq_length=48,
    ),
    # DeBERTa-v3: log-bucketed distances (exact within 4, logarithmic to 64), shared key
    # projections for c2p and p2c, LayerNorm'd relative table, no absolute positions.
    "deberta-v3": Recipe(
        "deberta-v3",
        "deberta-v2",
        {
            **ENCODER,
            "max_position_embeddings": 64,
            "vocab_size": 30522,
            "type_vocab_size": 0,
            "relative_attention": True,
            "position_buckets": 8,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
        },
        pooling="mean",
        normalize=True,
        max_seq_length=64,
    ),
    # DeBERTa-v2: distances clamped at 16, separate pos_key/pos_query projections, absolute
    # positions and token types too, saved as DebertaV2ForMaskedLM (under "deberta.").
    "deberta-v2": Recipe(
        "deberta-v2",
        "deberta-v2",
        {
            **ENCODER,
            "max_position_embeddings": 64,
            "vocab_size": 30522,
            "type_vocab_size": 2,
            "relative_attention": True,
            "max_relative_positions": 16,
            "share_att_key": False,
            "pos_att_type": "c2p|p2c",
            "position_biased_input": True,
        },
        pooling="cls",
        normalize=False,
        max_seq_length=48,
        model_class="DebertaV2ForMaskedLM",
    ),
    # T5 encoders: head_dim 12 (heads * d_kv != d_model), 8 buckets saturating at distance 20,
    # unscaled scores; v1.1's gated GELU-tanh with sentence-t5's Dense and Normalize after.
    "t5": Recipe(
        "t5",
        "t5",
        {
            "d_model": 32,
            "d_kv": 12,
            "num_layers": 2,
            "num_heads": 4,
            "d_ff": 48,
            "vocab_size": 30522,
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 20,
        },
        pooling="mean",
        normalize=True,
        max_seq_length=64,
        model_class="T5EncoderModel",
    ),
    "t5-v1.1": Recipe(
        "t5-v1.1",
        "t5",
        {
            "d_model": 32,
            "d_kv": 8,
            "num_layers": 2,
            "num_heads": 4,
            "d_ff": 48,
            "vocab_size": 30522,
            "feed_forward_proj": "gated-gelu",
            "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 20,
        },
        pooling="mean",
        normalize=True,
        max_seq_length=64,
        model_class="T5EncoderModel",
        dense=24,
    ),
}


@pytest.fixture(scope="module")
def texts(reference: dict) -> list[str]:
    """Real texts spread over lengths, the longest past every recipe's max_seq_length."""
    order = np.argsort(reference["tokens_truncated"], kind="stable")
    picks = order[np.linspace(0, len(order) - 1, N_TEXTS).astype(int)]
    return [reference["texts"][i] for i in picks]


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
    minilm_tokenizer_dir: Path,
    xlmr_tokenizer_dir: Path,
    texts: list[str],
    isolated_cache: None,
) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """Each recipe's sentence-transformers folder and its reference vectors and counts."""
    tokenizers = {"minilm": minilm_tokenizer_dir, "xlmr": xlmr_tokenizer_dir}
    out = {}
    for name, recipe in RECIPES.items():
        folder, st = quiet(
            build, recipe, tokenizers[recipe.tokenizer], tmp_path_factory.mktemp(name)
        )
        vectors, counts = quiet(reference, st, texts)
        out[name] = (folder, vectors, counts)
    return out


def _check(folder: Path, texts: list[str], want: np.ndarray, want_counts: np.ndarray) -> None:
    engine = Engine.from_pretrained(folder)
    got = engine.embed(texts)
    assert got.token_counts.tolist() == want_counts.tolist()
    assert got.embeddings.shape == want.shape
    a, b = got.embeddings.astype(np.float64), want.astype(np.float64)
    norms_a, norms_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cosines = (a * b).sum(axis=1) / norms_a / norms_b
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE, f"text {worst} ({want_counts[worst]} tokens): {cosines.min()}"
    np.testing.assert_allclose(norms_a, norms_b, rtol=1e-4)


@pytest.mark.parametrize("family", list(RECIPES))
def test_family_matches_sentence_transformers(family: str, built: dict, texts: list[str]) -> None:
    folder, want, counts = built[family]
    # Lengths mixed (so batches carry padding), some texts cut at the model's limit.
    assert len(set(counts.tolist())) >= 10
    assert counts.max() == RECIPES[family].max_seq_length
    _check(folder, texts, want, counts)


def test_a_limit_set_by_the_position_table_leaves_out_the_rows_before_the_first_token(
    tmp_path_factory: pytest.TempPathFactory,
    xlmr_tokenizer_dir: Path,
    texts: list[str],
    isolated_cache: None,
) -> None:
    """XLM-R's positions (66 rows here) start at padding_idx + 1 = 2. With no limit in
    sentence_bert_config.json or tokenizer_config.json, sentence-transformers caps the tokenizer
    at 66 and fails on a text of 65 tokens; embedserve cuts at 64, as sentence-transformers does
    when told max_seq_length 64 (the reference: the folder as it was built)."""
    from sentence_transformers import SentenceTransformer

    recipe = RECIPES["xlm-roberta"]
    assert recipe.max_seq_length == recipe.config["max_position_embeddings"] - 2
    folder, st = quiet(build, recipe, xlmr_tokenizer_dir, tmp_path_factory.mktemp("no-limit"))
    want, counts = quiet(reference, st, texts)
    assert counts.max() == recipe.max_seq_length
    for name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        config = json.loads((folder / name).read_text())
        config.pop(key, None)
        (folder / name).write_text(json.dumps(config))
    unlimited = quiet(SentenceTransformer, str(folder), device="cpu")
    assert unlimited.max_seq_length == recipe.config["max_position_embeddings"]
    assert Engine.from_pretrained(folder).model_info.max_tokens == recipe.max_seq_length
    _check(folder, texts, want, counts)


# Families whose attention the layer library writes in the plain form the fused kernels take
# (models/fused_attention.py); rotary, decoder and disentangled attention keep the
# standard ops (DeBERTa adds its relative terms as a bias). A layer-library change that silently loses the fused kernel fails here.
FUSED_ATTENTION = {
    "bert",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "deberta-v2",
    "deberta-v3",
    "t5",
    "t5-v1.1",
}


@pytest.mark.parametrize("family", list(RECIPES))
def test_cpu_sessions_fuse_the_plain_attention_cores(
    family: str, built: dict, texts: list[str]
) -> None:
    import onnx
    import onnxruntime as ort
    from embedserve.models.fused_attention import MULTI_HEAD, PADDED
    from embedserve.models.graph import fused_onnx, onnx_for
    from embedserve.planning import pad_batch
    from embedserve.runtime.custom_ops import library, register_library
    from embedserve.runtime.session import graph_feeds

    folder = built[family][0]
    plain = onnx_for(folder)
    layers = sum(n.op_type == "Softmax" for n in onnx.load(str(plain)).graph.node)
    # ONNX Runtime's fused op, and embedserve's where its library is built (the default then).
    ops = [MULTI_HEAD, PADDED] if library() is not None else [MULTI_HEAD]
    fused = {op: fused_onnx(plain, op) for op in ops}
    for op, graph in fused.items():
        counts = Counter(n.op_type for n in onnx.load(str(graph)).graph.node)
        assert counts[op.name] == (layers if family in FUSED_ATTENTION else 0)
        if family not in FUSED_ATTENTION:
            assert graph == plain
        if family == "bert" and op == PADDED:
            # A post-norm block's GELU and both norms run as embedserve's one-pass kernels.
            assert (counts["BiasGelu"], counts["BiasResidualLayerNorm"]) == (layers, 2 * layers)
    if family not in FUSED_ATTENTION:
        return
    # The padded batch the engine would run: the fused graphs' hidden states are the plain one's.
    engine = Engine.from_pretrained(folder)
    ids, mask, types = pad_batch(list(engine.prepare(texts).sequences))
    outputs = []
    for graph in (plain, *fused.values()):
        options = ort.SessionOptions()
        register_library(options)
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        outputs.append(session.run(None, graph_feeds(names, ids, mask, types))[0])
    real = mask.astype(bool)
    for output in outputs[1:]:
        np.testing.assert_allclose(output[real], outputs[0][real], rtol=1e-5, atol=1e-5)


# --- the same weights stored the ways real checkpoints store them -------------------------


VARIANTS = {
    # BertForMaskedLM-style names, in three shards.
    "bert-prefixed-sharded": (
        "bert",
        {"prefix": "bert.", "shards": 3, "config": {"architectures": ["BertForMaskedLM"]}},
    ),
    # bf16 storage (the recipe's weights are bf16-exact) under "roberta.", as CamemBERT.
    "camembert-bf16-prefixed": (
        "xlm-roberta",
        {
            "prefix": "roberta.",
            "dtype": "bfloat16",
            "config": {"model_type": "camembert", "architectures": ["CamembertModel"]},
        },
    ),
    "distilbert-prefixed": ("distilbert", {"prefix": "distilbert."}),
    # A transformers 4.x config: separate rope thetas, no layer_types, torch_dtype.
    "modernbert-4x-config": (
        "modernbert",
        {
            "prefix": "model.",
            "shards": 2,
            "config": {
                "global_rope_theta": 160000.0,
                "local_rope_theta": 10000.0,
                "global_attn_every_n_layers": 3,
                "torch_dtype": "float32",
            },
            "drop": ("rope_parameters", "layer_types", "dtype"),
        },
    ),
    # 4.x config (rope_theta at top level) with fp16 shards under "model.".
    "qwen3-4x-config-fp16-sharded": (
        "qwen3",
        {
            "prefix": "model.",
            "dtype": "float16",
            "shards": 2,
            "config": {
                "rope_theta": 10000.0,
                "torch_dtype": "float16",
                "architectures": ["Qwen3ForCausalLM"],
            },
            "drop": ("rope_parameters", "layer_types", "dtype"),
        },
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpoint_variants(variant: str, built: dict, texts: list[str], tmp_path: Path) -> None:
    family, edits = VARIANTS[variant]
    folder, want, counts = built[family]
    _check(rewrite(folder, tmp_path / variant, **edits), texts, want, counts)


def test_causal_mask_with_left_padding(built: dict, tmp_path: Path) -> None:
    """Qwen3's graph gives the last token the same state whether the row is left-padded in a
    batch or alone: padded keys are masked and fully-masked query rows stay finite."""
    import onnxruntime as ort
    from embedserve.models.compiler import compile_to_onnx

    folder = built["qwen3"][0]
    session = ort.InferenceSession(
        str(compile_to_onnx(folder, tmp_path / "model.onnx")), providers=["CPUExecutionProvider"]
    )
    ids = np.asarray([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
    mask = (np.arange(6) < np.asarray([[6], [3]])).astype(np.int64)
    left_ids = np.asarray([ids[0], np.roll(ids[1], 3)])
    left_mask = np.asarray([mask[0], np.roll(mask[1], 3)])
    (right,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    (left,) = session.run(None, {"input_ids": left_ids, "attention_mask": left_mask})
    (alone,) = session.run(None, {"input_ids": ids[1:, :3], "attention_mask": mask[1:, :3]})
    assert np.isfinite(left).all()
    np.testing.assert_allclose(right[1, 2], alone[0, 2], atol=1e-5)
    # Left padding shifts rotary positions (transformers numbers them 0..n-1 regardless), so
    # only the unpadded row is position-for-position identical.
    np.testing.assert_allclose(left[0], right[0], atol=1e-5)
