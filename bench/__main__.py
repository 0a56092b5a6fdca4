"""`python -m bench SUITE [options]`: one of the suites below."""

from __future__ import annotations

import importlib
import os
import sys

CACHE_ENV = "EMBEDSERVE_CACHE_BYTES"

SUITES = {
    "kernels": "bench.bench_kernels",
    "engine": "bench.bench_engine",
    "http": "bench.bench_http",
    "rerank": "bench.bench_rerank",
    "classify": "bench.bench_classify",
    "colbert": "bench.bench_colbert",
    "overload": "bench.bench_overload",
    "soak": "bench.bench_soak",
    "gpu": "bench.bench_gpu",
    "quantize": "bench.bench_quantize",
    "corpus": "bench.bench_corpus",
    "replicas": "bench.bench_replicas",
    "peers": "bench.bench_peers",
    "ceiling": "bench.bench_ceiling",
    "sparse": "bench.bench_sparse",
    "families": "bench.bench_families",
    "floor": "bench.bench_floor",
    "paced": "bench.bench_paced",
    "onetext": "bench.bench_onetext",
    "ortops": "bench.bench_ortops",
}


def main() -> None:
    # The benches measure the model, the batcher and the server, so repeated texts must reach
    # the model: the exact result cache is off in every server they start and every engine
    # that reads the settings (set EMBEDSERVE_CACHE_BYTES to measure it).
    os.environ.setdefault(CACHE_ENV, "0")
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(__doc__.strip())
        print("suites:", ", ".join(SUITES))
        sys.exit(2)
    module = importlib.import_module(SUITES[sys.argv[1]])
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
