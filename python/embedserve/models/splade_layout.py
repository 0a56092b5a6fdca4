"""Where a SPLADE model's parts are: sentence-transformers' SparseEncoder folders, plain
(`modules.json`: the MLM transformer at the root, then SpladePooling) or inference-free (one
Router whose `router_config.json` sends documents through MLM transformer + SpladePooling and
queries through SparseStaticEmbedding, a weight per vocabulary id, no model run).

A bare `*ForMaskedLM` folder (no modules.json) reads as the plain layout with SpladePooling's
defaults, which is what SparseEncoder builds for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.models.st_modules import ModelConfigError, class_name, read_json, read_modules

# SpladePooling's activations: log1p(relu(x)), and OpenSearch's log1p(log1p(relu(x))).
LOG1P_TIMES = {"relu": 1, "log1p_relu": 2}
_TRANSFORMERS = ("MLMTransformer", "Transformer")


@dataclass(frozen=True)
class SpladeLayout:
    document: Path  # the MLM checkpoint: config.json, weights, tokenizer
    log1p_times: int  # SpladePooling's activation: how many times log1p is applied
    query: Path | None = None  # a SparseStaticEmbedding folder: the inference-free query side


def _modules(directory: Path) -> list[tuple[str, Path]]:
    """(class name, folder) of each top-level module, in order."""
    ordered = read_modules(directory)
    return [
        (class_name(str(m.get("type", ""))), directory / str(m.get("path") or "")) for m in ordered
    ]


def _routes(directory: Path) -> dict[str, list[tuple[str, Path]]]:
    """A Router's routes: name → (class name, folder) of each of its modules."""
    config: dict[str, Any] = read_json(directory / "router_config.json") or {}
    types = config.get("types") or {}
    return {
        route: [(class_name(str(types.get(name, ""))), directory / name) for name in names]
        for route, names in (config.get("structure") or {}).items()
    }


def _stack(directory: Path) -> list[tuple[str, Path]]:
    """The modules a document goes through: the top level, or a Router's document route."""
    modules = _modules(directory)
    if [kind for kind, _ in modules] == ["Router"]:
        return _routes(modules[0][1]).get("document", [])
    return modules


def is_splade(directory: Path) -> bool:
    """A SparseEncoder folder whose documents end in SpladePooling."""
    return any(kind == "SpladePooling" for kind, _ in _stack(directory))


def splade_layout(directory: Path) -> SpladeLayout:
    """The parts of a SPLADE folder; errors name what is not supported."""
    stack = _stack(directory)
    if not stack:  # a bare masked LM: SparseEncoder's default stack
        return SpladeLayout(directory, 1)
    kinds = [kind for kind, _ in stack]
    if len(stack) != 2 or kinds[0] not in _TRANSFORMERS or kinds[1] != "SpladePooling":
        raise ModelConfigError(
            f"{directory}: modules {kinds}; a SPLADE model here is a masked-LM transformer then "
            "SpladePooling"
        )
    pooling = read_json(stack[1][1] / "config.json") or {}
    strategy = pooling.get("pooling_strategy", "max")
    activation = pooling.get("activation_function", "relu")
    if strategy != "max" or activation not in LOG1P_TIMES:
        # Sum pooling's log1p per token does not commute with the sum, so the graph's max trick
        # (sparse_heads) would not hold.
        raise ModelConfigError(
            f"{directory}: SpladePooling {strategy!r} with {activation!r} is not supported "
            f"(supported: 'max' with {' or '.join(map(repr, LOG1P_TIMES))})"
        )
    query = None
    modules = _modules(directory)
    if [kind for kind, _ in modules] == ["Router"]:
        route = _routes(modules[0][1]).get("query", [])
        if [kind for kind, _ in route] == ["SparseStaticEmbedding"]:
            query = route[0][1]
        elif route and route != stack:
            raise ModelConfigError(
                f"{directory}: the query route {[k for k, _ in route]} is not supported (only "
                "SparseStaticEmbedding, or the document route itself)"
            )
    return SpladeLayout(stack[0][1], LOG1P_TIMES[activation], query)
