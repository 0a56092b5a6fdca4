"""Two builds of embedserve's ONNX Runtime kernels (`_ortops`) side by side, on the engine's own
bulk batches: is a kernel change faster in the model, and does it give the same vectors?

    python -m bench ortops BASE.so NEW.so [--model all-MiniLM-L6-v2] [--passes 5] [--texts 800]

Both libraries run the same fused fp32 graph (models/fused_attention.py, the graph the engine's
CPU sessions run) on one-thread sessions, one per library, over the batches `Engine.embed` makes of
the reference texts (tests/data, repeated to `--texts`) for a one-thread bulk run. The sessions
take turns batch by batch (the first of each pair alternating), so a neighbour's burst falls on
both alike: whole runs timed one after the other moved ±5 % on a shared 2-vCPU machine where
these passes agreed within ±0.5 % (bench/NOTES.md, wave 17). Printed: the largest difference
between the two libraries' outputs, then each pass's seconds and BASE ÷ NEW (above 1: NEW is
faster), and their median. Build a library with `cmake --build BUILD --target _ortops` on a
configured build folder, or take `_ortops.so` out of a wheel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from embedserve.models import DEFAULT_MODEL

from bench.machine import describe_machine

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ortops", description=__doc__)
    parser.add_argument("base", type=Path, help="the _ortops library to compare against")
    parser.add_argument("new", type=Path, help="the changed _ortops library")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--texts", type=int, default=800, help="reference texts, repeated")
    args = parser.parse_args(argv)
    for library in (args.base, args.new):
        if not library.is_file():
            parser.error(f"{library} is not a file")
    if min(args.passes, args.texts) < 1:
        parser.error("--passes and --texts must be at least 1")
    print(describe_machine())
    sessions, names, batches = _load(args)
    outputs = [[s.run(None, _feeds(names, b))[0] for b in batches] for s in sessions]
    difference = max(float(np.abs(a - b).max()) for a, b in zip(*outputs, strict=True))
    print(f"{len(batches)} batches; largest output difference, base against new: {difference:g}")
    ratios = []
    for index in range(args.passes):
        seconds = [0.0, 0.0]
        for number, batch in enumerate(batches):
            feeds = _feeds(names, batch)
            for side in (0, 1) if number % 2 == 0 else (1, 0):
                started = time.perf_counter()
                sessions[side].run(None, feeds)
                seconds[side] += time.perf_counter() - started
        ratios.append(seconds[0] / seconds[1])
        print(
            f"pass {index + 1}: base {seconds[0]:.3f} s, new {seconds[1]:.3f} s, "
            f"base / new {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"\nmedian base / new: {statistics.median(ratios):.3f} (above 1: new is faster)")


def _load(args: argparse.Namespace):
    import onnxruntime as ort
    from embedserve.engine import Engine
    from embedserve.models.fused_attention import PADDED
    from embedserve.models.graph import fused_onnx
    from embedserve.planning import bulk_batch_tokens, pad_batch, plan_batches

    reference = json.loads((DATA / f"{args.model}.public.json").read_text())["texts"]
    texts = (reference * (args.texts // len(reference) + 1))[: args.texts]
    engine = Engine.from_pretrained(args.model, precision="fp32", cache_bytes=0)
    sequences = engine.prepare(texts).sequences
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    groups = plan_batches(lengths, bulk_batch_tokens(engine.max_batch_tokens))
    batches = [pad_batch([sequences[i] for i in group]) for group in groups]
    graph = fused_onnx(Path(engine.session.path), PADDED)
    sessions = []
    for library in (args.base, args.new):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as a bulk worker runs them
        options.inter_op_num_threads = 1
        options.register_custom_ops_library(str(library.resolve()))
        sessions.append(
            ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        )
    return sessions, [i.name for i in sessions[0].get_inputs()], batches


def _feeds(names: list[str], batch: tuple[np.ndarray, np.ndarray, np.ndarray]):
    from embedserve.runtime.session import graph_feeds

    return graph_feeds(names, *batch)


if __name__ == "__main__":
    main()
