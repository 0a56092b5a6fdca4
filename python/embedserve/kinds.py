"""The class that loads each kind of model folder (models.kind), for the server's loader and for
`pull` and `serve`, which build the graph that class will open before any model loads."""

from __future__ import annotations

import os
from pathlib import Path

from embedserve.engine import Engine
from embedserve.late_interaction import ColBERT
from embedserve.loading import LoadOptions, plan_load
from embedserve.models import resolve_model_dir
from embedserve.models.kind import EMBEDDER, LATE_INTERACTION, RERANKER, SPARSE, model_kind
from embedserve.reranker import Reranker
from embedserve.sparse import SparseEncoder

Loader = type[Engine | Reranker | SparseEncoder | ColBERT]

LOADERS: dict[str, Loader] = {
    EMBEDDER: Engine,
    RERANKER: Reranker,
    SPARSE: SparseEncoder,
    LATE_INTERACTION: ColBERT,
}


def loader_for(model_dir: Path) -> Loader:
    """The class that loads the model in `model_dir`, by what the folder holds."""
    return LOADERS[model_kind(model_dir)]


def build_graph(
    spec: str | os.PathLike[str], options: LoadOptions, *, here: bool = True
) -> tuple[Path, Path]:
    """Fetch `spec` and build the graph its kind opens when it loads with `options` (the kind's
    `graph`, for the same plan), opening no session; returns the model's folder and the graph.
    Prebuilding any other graph would leave the one that loads to be compiled by each worker.
    `here`: for a model to run on this machine (`serve`), whose providers are checked before
    anything is fetched or built; `pull` may prepare for another (`plan_load`)."""
    if here:
        from embedserve.runtime.backends import check_here

        check_here(options.providers)
    model_dir = resolve_model_dir(spec, compile=options.compile)
    loader = loader_for(model_dir)
    return model_dir, loader.graph(plan_load(model_dir, options, loader.runs, here=here))
