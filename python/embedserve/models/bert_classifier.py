"""Compile a BertForSequenceClassification (a cross-encoder) into an ONNX graph that ends in logits.

The encoder is `bert_onnx`'s graph, unchanged (so ONNX Runtime's fusions still apply); the head is
transformers' BertPooler (dense + tanh on the [CLS] state) and the classifier dense, in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from embedserve.models.bert_onnx import (
    build_bert_graph,
    load_bert_weights,
    read_bert_config,
    save_model_atomically,
)

HEAD_TENSORS = ("pooler.dense.weight", "pooler.dense.bias", "classifier.weight", "classifier.bias")


def compile_bert_classifier_to_onnx(model_dir: Path, output_path: Path) -> Path:
    """Inputs as the encoder's; output `logits` (float32 [batch, num_labels])."""
    model_dir, output_path = Path(model_dir), Path(output_path)
    config = read_bert_config(model_dir / "config.json")
    weights_path = model_dir / "model.safetensors"
    encoder = load_bert_weights(weights_path, config)
    head = load_head(weights_path, config.hidden_size)
    model = build_bert_graph(config, encoder, name=model_dir.name)
    attach_pooler_classifier(model, head)
    save_model_atomically(model, output_path)
    return output_path


def load_head(path: Path, hidden_size: int) -> dict[str, np.ndarray]:
    """The pooler and classifier tensors, keyed without the "bert." prefix, as float32."""
    import ml_dtypes  # noqa: F401 - registers bfloat16 for safetensors' numpy loader
    from safetensors import safe_open

    head: dict[str, np.ndarray] = {}
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            name = key.removeprefix("bert.")
            if name in HEAD_TENSORS:
                head[name] = np.ascontiguousarray(f.get_tensor(key), dtype=np.float32)
    missing = [name for name in HEAD_TENSORS if name not in head]
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: a BertForSequenceClassification checkpoint holds "
            "its pooler and classifier"
        )
    wrong = [
        f"{name} is {head[name].shape}"
        for name, shape in (("pooler.dense.weight", (hidden_size, hidden_size)),
                            ("classifier.weight", (head["classifier.bias"].shape[0], hidden_size)))
        if head[name].shape != shape
    ]
    if wrong:
        raise ValueError(f"{path}: head tensors do not match hidden_size {hidden_size}: {wrong}")
    return head


def attach_pooler_classifier(model: onnx.ModelProto, head: dict[str, np.ndarray]) -> None:
    """Replace the graph's last_hidden_state output by classifier(tanh(pooler(state[:, 0])))."""
    graph = model.graph
    labels = head["classifier.bias"].shape[0]
    tensors = {
        "head/cls_index": np.asarray(0, dtype=np.int64),
        "pooler.dense.weight_t": head["pooler.dense.weight"].T,
        "pooler.dense.bias": head["pooler.dense.bias"],
        "classifier.weight_t": head["classifier.weight"].T,
        "classifier.bias": head["classifier.bias"],
    }
    for name, array in tensors.items():
        # np.asarray, not np.ascontiguousarray: the latter turns the 0-d index into shape (1,).
        graph.initializer.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
    node = helper.make_node
    graph.node.extend([
        node("Gather", ["last_hidden_state", "head/cls_index"], ["head/cls"], name="head/cls", axis=1),
        node("MatMul", ["head/cls", "pooler.dense.weight_t"], ["head/pooler_mm"], name="head/pooler_mm"),
        node("Add", ["head/pooler_mm", "pooler.dense.bias"], ["head/pooler"], name="head/pooler"),
        node("Tanh", ["head/pooler"], ["head/pooled"], name="head/tanh"),
        node("MatMul", ["head/pooled", "classifier.weight_t"], ["head/cls_mm"], name="head/cls_mm"),
        node("Add", ["head/cls_mm", "classifier.bias"], ["logits"], name="head/logits"),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels]))
    model.doc_string = "BertForSequenceClassification logits, compiled from safetensors by embedserve"
