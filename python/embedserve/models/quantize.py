"""Dynamic int8 quantization of an fp32 encoder graph (weights int8 per channel, activations at run time)."""

from __future__ import annotations

from pathlib import Path

from embedserve.fileio import atomic_write_path

QUANTIZE_MODES = ("int8",)


def check_quantize(mode: str | None) -> None:
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES} or None, got {mode!r}")


def quantize_int8(source: Path, target: Path) -> Path:
    """Write an int8 copy of `source` to `target` atomically.

    Per-channel weights and only MatMuls with a constant weight (not Q·Kᵀ or attention·V):
    measured on all-MiniLM-L6-v2, per-tensor scales fell to cosine 0.90 against the fp32
    vectors, per-channel kept 0.984 (mean 0.993) at the same speed (bench/NOTES.md).

    Weights in 7 bits (reduce_range) and the static recipe's sensitive MatMuls (FFN
    down-projections, last layer) kept in float: on CPUs without VNNI, ORT's u8 x s8 kernel
    saturates int16 pair sums when activations are lopsided (MPNet: cosine < 0 vs fp32), and
    MPNet's FFN down input (post-GELU, up to ~26) alone cost cosine 0.87 at run-time scales.
    Min cosine over 50 reference texts (AVX2 host): all-mpnet-base-v2 -0.07 -> 0.969,
    all-MiniLM-L6-v2 0.986 -> 0.992.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_write_path(target) as staged:
        quantize_dynamic(
            str(source),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            nodes_to_exclude=sensitive_nodes(Path(source)),
            extra_options={"MatMulConstBOnly": True},
        )
    return target


def sensitive_nodes(graph_path: Path) -> list[str]:
    """MatMuls the dynamic int8 copy keeps in float, by a fixed rule from round 2's
    measurements (bench/NOTES.md §R2.3; the static copy in `static_int8` checks instead):

    - each layer's FFN down-projection (a constant [k, n] weight with k > n): its input, after
      GELU, has the widest range of any activation;
    - every MatMul of the last layer, whose error reaches the pooled vector undamped.

    Found by weight shape and by the compiler's `layer{n}/` node scopes, so it holds for every
    architecture the compiler emits.
    """
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    dense = [
        n
        for n in model.graph.node
        if n.op_type == "MatMul" and len(n.input) == 2 and len(shapes.get(n.input[1], ())) == 2
    ]
    scopes = [n.name.split("/")[0] for n in dense if "/" in n.name]
    last_scope = scopes[-1] if scopes else None
    keep = []
    for node in dense:
        rows, cols = shapes[node.input[1]]
        if rows > cols or (last_scope is not None and node.name.split("/")[0] == last_scope):
            keep.append(node.name)
    return keep
