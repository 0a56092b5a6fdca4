"""The compiler's parts that need no model: the family registry, config reading, MPNet's
position buckets, checkpoint errors, and the head hook rerankers build on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from embedserve.models.architectures import family_for
from embedserve.models.architectures.mpnet import relative_position_bucket
from embedserve.models.compiler import UnsupportedArchitectureError, build_model, compile_to_onnx
from embedserve.models.heads import classifier_head
from embedserve.models.hf_config import HFConfig
from embedserve.models.sparse_heads import splade_head
from safetensors.numpy import save_file


def _config(raw: dict) -> HFConfig:
    return HFConfig(raw, Path("config.json"))


@pytest.mark.parametrize(
    ("raw", "family"),
    [
        ({"model_type": "xlm-roberta"}, "roberta"),
        ({"model_type": "camembert"}, "roberta"),
        ({"architectures": ["XLMRobertaModel"]}, "roberta"),
        ({"architectures": ["MPNetForMaskedLM"]}, "mpnet"),
        ({"architectures": ["Qwen3ForCausalLM"]}, "qwen3"),
        ({"model_type": "qwen2"}, "qwen3"),
        ({"model_type": "modernbert"}, "modernbert"),
        ({"architectures": ["DistilBertModel"]}, "distilbert"),
        ({"model_type": "nomic_bert", "architectures": ["NomicBertModel"]}, "nomic_bert"),
        ({"architectures": ["NomicBertModel"]}, "nomic_bert"),  # not "Bert" by substring
        ({"model_type": "new", "architectures": ["NewModel"]}, "gte"),
        ({"model_type": "bert", "architectures": ["JinaBertForMaskedLM"]}, "jina_bert"),
        ({"model_type": "bert", "position_embedding_type": "alibi"}, "jina_bert"),
        ({"architectures": ["DebertaV2ForSequenceClassification"]}, "deberta-v2"),
        ({"model_type": "t5", "architectures": ["T5EncoderModel"]}, "t5"),
    ],
)
def test_registry_finds_family(raw: dict, family: str) -> None:
    assert family_for(_config(raw)).name == family


@pytest.mark.parametrize(
    "raw",
    [
        {"architectures": ["LongformerModel"], "model_type": "longformer"},
        {"architectures": ["BartModel"]},
        {},
    ],
)
def test_unknown_architecture_names_it_and_the_supported_list(raw: dict) -> None:
    with pytest.raises(UnsupportedArchitectureError) as caught:
        family_for(_config(raw))
    message = str(caught.value)
    for name in raw.get("architectures", []):
        assert name in message
    assert "XLMRobertaModel" in message and "qwen3" in message and "ModernBertModel" in message


def test_rope_parameters_in_both_config_formats() -> None:
    v4 = _config({"rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert v4.rope_parameters() == {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}
    v5 = _config({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})
    assert v5.rope_parameters() == {"rope_type": "default", "rope_theta": 1e6}
    per_layer = _config(
        {
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            }
        }
    )
    assert per_layer.rope_parameters("sliding_attention")["rope_theta"] == 10000.0
    assert per_layer.rope_parameters("full_attention")["rope_theta"] == 160000.0
    assert _config({"torch_dtype": "bfloat16"}).dtype == "bfloat16"
    assert _config({"dtype": "float16"}).dtype == "float16"


def test_mpnet_buckets_match_transformers() -> None:
    import torch
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    distances = np.arange(-513, 514)
    want = MPNetEncoder.relative_position_bucket(torch.from_numpy(distances)).numpy()
    np.testing.assert_array_equal(relative_position_bucket(distances), want)


def _tiny_qwen3(directory: Path, **overrides: object) -> None:
    config = {
        "model_type": "qwen3",
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 4,
        "intermediate_size": 8,
        "max_position_embeddings": 16,
        "rope_theta": 10000.0,
        **overrides,
    }
    (directory / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    shapes = {
        "model.embed_tokens.weight": (10, 8),
        "model.norm.weight": (8,),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.0.post_attention_layernorm.weight": (8,),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.k_proj.weight": (4, 8),
        "model.layers.0.self_attn.v_proj.weight": (4, 8),
        "model.layers.0.self_attn.o_proj.weight": (8, 8),
        "model.layers.0.mlp.gate_proj.weight": (8, 8),
        "model.layers.0.mlp.up_proj.weight": (8, 8),
        "model.layers.0.mlp.down_proj.weight": (8, 8),
        "score.weight": (1, 8),
    }
    save_file(
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()},
        str(directory / "model.safetensors"),
    )


def test_unsupported_rope_type_is_named(tmp_path: Path) -> None:
    _tiny_qwen3(tmp_path, rope_scaling={"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(UnsupportedArchitectureError, match="yarn"):
        compile_to_onnx(tmp_path, tmp_path / "model.onnx")


def test_heads_that_do_not_split_the_width_are_named(tmp_path: Path) -> None:
    """ModernBERT's packed qkv weights have the same shape for 4 heads as for 5: the graph was
    compiled, cached, and failed when loaded ("Incompatible dimensions for matrix
    multiplication"); transformers refuses such a config."""
    import transformers

    config = transformers.ModernBertConfig(
        vocab_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=16,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    transformers.ModernBertModel(config).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "num_attention_heads": 5}))
    with pytest.raises(ValueError, match="hidden_size 32 is not a multiple of 5 attention heads"):
        build_model(tmp_path)
    _tiny_qwen3(tmp_path, num_key_value_heads=3, num_attention_heads=4)
    with pytest.raises(ValueError, match="4 attention heads do not share 3 key/value heads"):
        build_model(tmp_path)


def test_missing_tensor_and_shard_are_named(tmp_path: Path) -> None:
    _tiny_qwen3(tmp_path, num_hidden_layers=2)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.input_layernorm\.weight"):
        build_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors"):
        build_model(tmp_path)


def test_head_reads_the_hidden_state_and_its_own_tensors(tmp_path: Path) -> None:
    """A head appended to the encoder: last position's state through a "score" matrix that
    sits outside the "model." prefix, as Qwen3ForSequenceClassification stores it."""
    import onnxruntime as ort
    from embedserve.models.compiler import Output

    _tiny_qwen3(tmp_path)

    def score_head(g, config, weights, encoded):
        last = g.op("Gather", [encoded.hidden, g.const(-1, np.int64)], "head/last", axis=1)
        matrix = g.weight("score.weight_t", weights.get("score.weight", (1, 8)).T)
        return Output(g.op("MatMul", [last, matrix], "head/logits", output="logits"), ("batch", 1))

    plain = ort.InferenceSession(build_model(tmp_path).SerializeToString())
    headed = ort.InferenceSession(build_model(tmp_path, head=score_head).SerializeToString())
    feeds = {"input_ids": np.asarray([[1, 2, 3]]), "attention_mask": np.ones((1, 3), np.int64)}
    (hidden,) = plain.run(None, feeds)
    (logits,) = headed.run(None, feeds)
    assert [o.name for o in headed.get_outputs()] == ["logits"]
    from safetensors.numpy import load_file

    score = load_file(str(tmp_path / "model.safetensors"))["score.weight"]
    np.testing.assert_allclose(logits, hidden[:, -1] @ score.T, rtol=1e-5, atol=1e-6)


def _shard(directory: Path) -> None:
    """Split directory's model.safetensors into two shards plus an index."""
    from safetensors.numpy import load_file

    weights = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    names = sorted(weights)
    weight_map = {}
    for n, part in enumerate((names[::2], names[1::2])):
        shard = f"model-{n + 1:05d}-of-00002.safetensors"
        save_file({k: weights[k] for k in part}, str(directory / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_sharded_checkpoint_is_compiled_once_and_keyed_by_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedserve.models.graph import onnx_for

    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    _tiny_qwen3(model)
    _shard(model)
    first = onnx_for(model)
    assert first.is_relative_to(tmp_path / "cache")
    built_at = first.stat().st_mtime_ns
    assert onnx_for(model) == first and first.stat().st_mtime_ns == built_at
    raw = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**raw, "rms_norm_eps": 1e-5}))
    assert onnx_for(model) != first  # the graph bakes in eps: another config, another graph


@pytest.mark.parametrize(
    ("head", "model_type", "message"),
    [
        (
            classifier_head,
            "t5",
            (
                "config.json: t5 has no sequence-classification head here; cross-encoders can be "
                "compiled for bert, deberta-v2, distilbert, gte, jina_bert, modernbert, mpnet, "
                "qwen3, roberta"
            ),
        ),
        (
            splade_head,
            "modernbert",
            (
                "config.json: modernbert has no masked-LM head here; SPLADE models can be compiled "
                "for bert, distilbert, roberta"
            ),
        ),
    ],
)
def test_a_family_without_the_head_is_refused_naming_those_with_it(
    head, model_type: str, message: str
) -> None:
    with pytest.raises(UnsupportedArchitectureError) as error:
        head(_config({"model_type": model_type}))
    assert str(error.value) == message
