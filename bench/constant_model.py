"""`embedserve serve` with every model run answered by a constant vector, for `bench floor`: the
whole server — uvicorn, Litestar, the request pipeline, the tokenizer, normalization and the
response encoding — with none of the model's time, and so with none of its effect on the caches
(bench/NOTES.md, "The server's work beside a model run").

    python -m bench.constant_model serve --model all-MiniLM-L6-v2 --cache-bytes 0 ...
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from embedserve.cli import main
from embedserve.engine import Engine


def _constant_forward(self: Engine, sequences: Sequence[np.ndarray]) -> np.ndarray:
    # Ones rather than zeros: normalizing a zero vector is not what a real answer goes through.
    return np.ones((len(sequences), self.model_info.dimension), dtype=np.float32)


if __name__ == "__main__":
    # Replaced on the class before the server builds its engines: their batchers take the method.
    Engine.forward = _constant_forward  # type: ignore[method-assign]
    sys.exit(main())
