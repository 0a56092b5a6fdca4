"""`python -m bench SUITE [options]`: one of the suites below."""

from __future__ import annotations

import importlib
import sys

SUITES = {
    "kernels": "bench.bench_kernels",
    "engine": "bench.bench_engine",
    "http": "bench.bench_http",
    "rerank": "bench.bench_rerank",
    "overload": "bench.bench_overload",
    "soak": "bench.bench_soak",
    "gpu": "bench.bench_gpu",
    "quantize": "bench.bench_quantize",
    "corpus": "bench.bench_corpus",
    "replicas": "bench.bench_replicas",
    "peers": "bench.bench_peers",
    "ceiling": "bench.bench_ceiling",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        print(__doc__.strip())
        print("suites:", ", ".join(SUITES))
        sys.exit(2)
    module = importlib.import_module(SUITES[sys.argv[1]])
    module.main(sys.argv[2:])


if __name__ == "__main__":
    main()
