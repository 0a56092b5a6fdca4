"""`--huge-pages` (off by default): before each model is ready, the server moves its large
anonymous memory, the weights among it, onto 2 MiB pages (runtime/huge_pages.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from embedserve.engine import Engine
from embedserve.runtime.huge_pages import anonymous_spans, back_with_huge_pages

from .conftest import MODEL, cli_server, embed

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
needs_huge_pages = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not THP.exists() or "[never]" in THP.read_text(),
    reason="transparent huge pages are off here",
)


def huge_bytes(pid: int | str = "self") -> int:
    """AnonHugePages of a process: its anonymous memory on huge pages."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


def test_the_spans_are_whole_huge_pages_of_writable_anonymous_memory():
    # 1-9 MiB holds 2-8 MiB whole; under one huge page; read-only; a file; the heap; a stack.
    maps = """00100000-00900000 rw-p 00000000 00:00 0
00a00000-00b00000 rw-p 00000000 00:00 0
01000000-02000000 r--p 00000000 00:00 0
02000000-03000000 rw-p 00000000 08:01 42 /usr/lib/libfoo.so
04000000-04400000 rw-p 00000000 00:00 0 [heap]
7ff000000000-7ff000400000 rw-p 00000000 00:00 0 [stack]
"""
    assert anonymous_spans(maps) == [(2 << 20, 8 << 20)]


@needs_huge_pages
def test_huge_pages_leave_the_vectors_bit_for_bit(minilm_dir):
    engine = Engine.from_pretrained(minilm_dir, cache_bytes=0)
    texts = ["a query after a pause", "and a longer document about something else entirely"]
    before = engine.embed(texts).embeddings
    back_with_huge_pages()
    assert huge_bytes() >= 16 << 20  # the weights' prepacked copies, at least
    np.testing.assert_array_equal(engine.embed(texts).embeddings, before)


def served_huge_bytes(tmp_path: Path, *flags: str) -> int:
    """AnonHugePages of `embedserve serve` with `flags` once ready and one request answered."""
    with cli_server(tmp_path, *flags) as server:
        assert embed(server.url, {"model": MODEL, "input": ["one request"]}).status_code == 200
        return huge_bytes(server.pid)


@needs_huge_pages
def test_the_server_backs_its_models_with_huge_pages_when_asked(tmp_path):
    # Collapsed before the model is ready: /ready's 200 comes after it.
    assert served_huge_bytes(tmp_path, "--huge-pages") >= 16 << 20
    assert served_huge_bytes(tmp_path) < 8 << 20


def test_huge_pages_asked_for_and_not_done_say_so(monkeypatch, caplog):
    """Where the kernel refuses the collapse (before Linux 6.1, transparent huge pages off), the
    server went on on small pages with a debug line only: what --huge-pages asked was dropped
    without a word."""
    from embedserve.runtime import huge_pages

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux reads /proc/self/maps")
    monkeypatch.setattr(huge_pages, "MADV_COLLAPSE", 0x7FFF)  # advice no kernel knows: EINVAL
    with caplog.at_level("WARNING", logger=huge_pages.__name__):
        assert back_with_huge_pages() == 0
    assert "--huge-pages: no memory moved onto huge pages on Linux " in caplog.text
    assert "it needs Linux 6.1 or later" in caplog.text
