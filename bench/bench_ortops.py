"""Two builds of embedserve's ONNX Runtime kernels (`_ortops`) side by side, on the engine's own
bulk batches: is a kernel change faster in the model, and does it give the same vectors?

    python -m bench ortops BASE.so NEW.so [--model all-MiniLM-L6-v2] [--passes 5] [--texts 800]

Both libraries run the same fused fp32 graph (models/fused_attention.py, the graph the engine's
CPU sessions run) on one-thread sessions, one per library, over the batches `Engine.embed` makes of
the reference texts (tests/data, repeated to `--texts`) for a one-thread bulk run. The sessions
take turns batch by batch (the first of each pair alternating), so a neighbour's burst falls on
both alike: whole runs timed one after the other moved ±5 % on a shared 2-vCPU machine where
one run's passes agreed within ±0.5 % (runs an hour apart still differed by up to 2 %: repeat it;
bench/NOTES.md, wave 17). Printed: the largest difference
between the two libraries' outputs, then each pass's seconds and BASE ÷ NEW (above 1: NEW is
faster), and their median. Build a library with `cmake --build BUILD --target _ortops` on a
configured build folder, or take `_ortops.so` out of a wheel.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from embedserve.models import DEFAULT_MODEL

from bench.bench_ceiling import bulk_batches, session
from bench.machine import describe_machine


def main(argv: list[str] | None = None) -> None:
    from embedserve.models.fused_attention import PADDED
    from embedserve.models.graph import fused_onnx
    from embedserve.runtime.session import graph_feeds

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
    engine, batches = bulk_batches(args.model, args.texts)
    graph = fused_onnx(Path(engine.session.path), PADDED)
    # One thread each, as a bulk worker runs them.
    sessions = [session(graph, 1, library) for library in (args.base, args.new)]
    names = [i.name for i in sessions[0].get_inputs()]
    feeds = [graph_feeds(names, *batch) for batch in batches]
    outputs = [[s.run(None, f)[0] for f in feeds] for s in sessions]
    difference = max(float(np.abs(a - b).max()) for a, b in zip(*outputs, strict=True))
    print(f"{len(batches)} batches; largest output difference, base against new: {difference:g}")
    ratios = []
    for index in range(args.passes):
        seconds = [0.0, 0.0]
        for number, feed in enumerate(feeds):
            for side in (0, 1) if number % 2 == 0 else (1, 0):
                started = time.perf_counter()
                sessions[side].run(None, feed)
                seconds[side] += time.perf_counter() - started
        ratios.append(seconds[0] / seconds[1])
        print(
            f"pass {index + 1}: base {seconds[0]:.3f} s, new {seconds[1]:.3f} s, "
            f"base / new {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"\nmedian base / new: {statistics.median(ratios):.3f} (above 1: new is faster)")


if __name__ == "__main__":
    main()
