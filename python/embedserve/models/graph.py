"""Find the ONNX graph of a model folder, compiling safetensors weights into one when needed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from embedserve.models.cache import compiled_graph, compiled_root, file_hash
from embedserve.models.quantize import check_quantize, quantize_int8
from embedserve.models.st_modules import static_embedding_dir

if TYPE_CHECKING:
    import onnx

    from embedserve.models.fused_attention import AttentionOp

# Bump when the compiler's output changes, so stale graphs in users' caches are rebuilt.
COMPILER_VERSION = 2
STATIC_VERSION = 3  # the StaticEmbedding graph's own (v2: padded rows zeroed)
QUANTIZER_VERSION = 2
GPU_PASSES_VERSION = 1  # the fp16 and in-graph pooling passes
ONNX_CANDIDATES = ("model.onnx", "onnx/model.onnx")


class NoWeightsError(FileNotFoundError):
    """A model folder with neither an ONNX graph nor safetensors weights."""


def _why_no_weights(directory: Path, error: FileNotFoundError) -> str:
    """What a folder without weights embedserve reads has instead, where that says more."""
    from embedserve.models.st_modules import class_name, read_modules
    from embedserve.models.weights import PICKLE_INDEX, SHARD_INDEX

    if (directory / SHARD_INDEX).exists() or (directory / PICKLE_INDEX).exists():
        return f": {error}"
    moved = [
        str(m.get("path"))
        for m in read_modules(directory)
        if class_name(m["type"]) == "Transformer" and str(m.get("path") or ".") != "."
    ]
    if moved:
        # sentence-transformers 1.x saved the transformer in a module folder (0_BERT/,
        # 0_Transformer/); every later version saves it at the folder's root.
        return (
            f": modules.json puts its Transformer in {moved[0]}/, an old sentence-transformers "
            "layout; embedserve reads the transformer from the folder itself (move that "
            'folder\'s files up and set its path to "")'
        )
    return ""


def shipped_onnx(directory: Path) -> Path | None:
    for candidate in ONNX_CANDIDATES:
        if (directory / candidate).exists():
            return directory / candidate
    return None


def compiled_onnx(directory: Path, *, splade: bool = False) -> Path:
    """The cached ONNX graph compiled from `directory`'s safetensors, built on first use.

    `splade`: a masked LM's graph ending in SPLADE's sparse pairs (models.sparse_heads), cached
    under its own key, as the same folder may also be served for its hidden states.
    """
    from embedserve.models.compiler import check_supported, compile_to_onnx
    from embedserve.models.heads import classifier_head, yes_no_head
    from embedserve.models.kind import is_classifier, is_yes_no_reranker
    from embedserve.models.sparse_heads import splade_head
    from embedserve.models.weights import weight_files
    from embedserve.prompt_pairs import yes_no_ids

    static = static_embedding_dir(directory)
    if static is not None:
        return _static_embedding_onnx(static)
    try:
        shards = weight_files(directory)
    except FileNotFoundError as exc:
        raise NoWeightsError(
            f"{directory} has no model.onnx, onnx/model.onnx, model.safetensors or "
            f"pytorch_model.bin (single or sharded) to load{_why_no_weights(directory, exc)}"
        ) from exc
    config_path = directory / "config.json"
    config = check_supported(directory)  # an unsupported architecture fails here, cached or not
    # A cross-encoder's graph ends in its classifier's logits rather than the hidden states.
    head = classifier_head(config) if is_classifier(config.raw) else None
    if splade:
        head = splade_head(config)
    # The graph depends on the config (eps, activation, heads) as well as on the weights, and an
    # LLM reranker's on the ids of its tokenizer's "no" and "yes".
    config_bytes = config_path.read_bytes()
    if is_yes_no_reranker(directory, config.raw):
        ids = yes_no_ids(directory / "tokenizer.json")
        head = yes_no_head(*ids)
        config_bytes += repr(ids).encode()
    config_hash = hashlib.sha256(config_bytes).hexdigest()[:8]
    if len(shards) == 1:
        weights_hash = file_hash(shards[0])
    else:
        joined = "".join(file_hash(s) for s in shards)
        weights_hash = hashlib.sha256(joined.encode()).hexdigest()
    key = f"{weights_hash[:24]}-{config_hash}{'-splade' if splade else ''}-v{COMPILER_VERSION}"
    target = compiled_graph(key)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        compile_to_onnx(directory, target, head=head)
    return target


def _static_embedding_onnx(module_dir: Path) -> Path:
    """The cached graph of a StaticEmbedding module, built on first use."""
    from embedserve.models.compiler import build_static_embedding, save_model_atomically

    table = module_dir / "model.safetensors"
    if not table.exists():
        raise NoWeightsError(f"{module_dir}: the StaticEmbedding module has no model.safetensors")
    target = compiled_graph(f"{file_hash(table)[:24]}-static-v{STATIC_VERSION}")
    if not target.exists():
        save_model_atomically(build_static_embedding(module_dir), target)
    return target


def quantized_onnx(source: Path) -> Path:
    """The cached int8 copy of the graph at `source`, built on first use."""
    target = compiled_graph(f"{file_hash(source)[:32]}-int8-v{QUANTIZER_VERSION}")
    if not target.exists():
        quantize_int8(source, target)
    return target


def _derived_onnx(
    source: Path, tag: str, transform: Callable[[onnx.ModelProto], onnx.ModelProto]
) -> Path:
    """The cached result of a graph pass over `source`, built on first use."""
    import onnx

    from embedserve.models.compiler import save_model_atomically

    target = compiled_graph(f"{file_hash(source)[:32]}-{tag}-v{GPU_PASSES_VERSION}")
    if not target.exists():
        save_model_atomically(transform(onnx.load(str(source))), target)
    return target


def fp16_onnx(source: Path) -> Path:
    """The cached float16 copy of the graph at `source` (float32 inputs and outputs)."""
    from embedserve.models.fp16 import convert_to_fp16

    return _derived_onnx(source, "fp16", convert_to_fp16)


def fused_onnx(source: Path, op: AttentionOp | None = None) -> Path:
    """The cached copy of `source` whose attention cores run as one fused `op` (ONNX Runtime's
    MultiHeadAttention by default) and, with embedserve's attention, whose GELUs and norms run
    as embedserve's one-pass kernels too (models/fused_epilogues.py); or `source` itself when
    it has nothing the passes recognise (remembered, so a graph is read once).

    Only graphs in the compiled cache are read: the passes recognise the layer library's own
    form, so a graph a repository ships (whose external data may be a hub-cache symlink, which
    `onnx.load` refuses) is run as it is.
    """
    import onnx

    from embedserve.models.compiler import save_model_atomically
    from embedserve.models.fused_attention import (
        FUSION_VERSION,
        MULTI_HEAD,
        PADDED,
        fuse_attention,
        runs_in_float32,
    )
    from embedserve.models.fused_epilogues import fuse_epilogues

    op = op or MULTI_HEAD
    if not source.resolve().is_relative_to(compiled_root().resolve()):
        return source
    target = compiled_graph(f"{file_hash(source)[:32]}-{op.tag}-v{FUSION_VERSION}")
    nothing_to_fuse = target.with_name("nothing-to-fuse")
    if target.exists():
        return target
    if nothing_to_fuse.exists():
        return source
    model = onnx.load(str(source))
    if op == PADDED and not runs_in_float32(model):
        op = MULTI_HEAD  # embedserve's kernels are float32 only; ONNX Runtime's takes fp16 too
    fused = fuse_attention(model, op) is not None
    if op == PADDED:
        fused = fuse_epilogues(model) or fused
    if not fused:
        nothing_to_fuse.parent.mkdir(parents=True, exist_ok=True)
        nothing_to_fuse.touch()
        return source
    save_model_atomically(model, target)
    return target


def pooled_onnx(source: Path, pooling: str) -> Path:
    """The cached copy of `source` that pools in the graph: output `embeddings`, [n, hidden]."""
    from embedserve.models.pooling_graph import append_pooling

    return _derived_onnx(source, f"pool-{pooling}", lambda m: append_pooling(m, pooling))


def onnx_for(
    directory: Path,
    quantize: str | None = None,
    *,
    pooling: str | None = None,
    compile: bool = False,
) -> Path:
    """The float32 ONNX graph to run for a model folder: the one it ships (unless `compile`),
    else one compiled from its safetensors; with `pooling`, a copy that pools in the graph.

    `quantize="int8"` gives the dynamically quantized copy (the precisions the engine runs,
    static int8 and fp16 among them, come from `models.variants.graph_for`).
    """
    check_quantize(quantize)
    # A StaticEmbedding repo's own ONNX export takes (ids, offsets); ours takes padded batches.
    shipped = not compile and static_embedding_dir(directory) is None
    graph = shipped_onnx(directory) if shipped else None
    graph = graph or compiled_onnx(directory)
    if pooling is not None:
        graph = pooled_onnx(graph, pooling)
    return quantized_onnx(graph) if quantize == "int8" else graph
