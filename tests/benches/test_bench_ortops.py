"""`python -m bench ortops` runs end to end: two kernel libraries (here the installed one twice)
on the engine's bulk batches, their outputs compared and their time per pass (numbers are not
asserted, only that the same library gives the same outputs)."""

from __future__ import annotations

import re
import subprocess
import sys

from embedserve.runtime.custom_ops import library

from . import ROOT, run_bench


def test_ortops_bench_compares_two_builds():
    built = library()
    assert built is not None, "the package has no _ortops library"
    done = run_bench("ortops", str(built), str(built), "--texts", "24", "--passes", "2")
    difference = re.search(
        r"largest output difference, base against new: (\S+)$", done.stdout, re.MULTILINE
    )
    assert difference is not None, done.stdout
    assert float(difference.group(1)) == 0.0
    passes = re.findall(
        r"^pass \d+: base [\d.]+ s, new [\d.]+ s, base / new ([\d.]+)$", done.stdout, re.MULTILINE
    )
    assert len(passes) == 2 and all(float(r) > 0 for r in passes), done.stdout
    assert re.search(r"^median base / new: [\d.]+", done.stdout, re.MULTILINE), done.stdout


def test_ortops_bench_refuses_a_missing_library(tmp_path):
    missing = tmp_path / "nothing.so"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "ortops", str(missing), str(missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{missing} is not a file" in done.stderr
