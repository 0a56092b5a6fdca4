from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def minilm_tokenizer_dir(minilm_dir: Path) -> Path:
    """all-MiniLM-L6-v2's WordPiece tokenizer (30,522 tokens, [PAD]=0)."""
    return minilm_dir


@pytest.fixture(scope="module")
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, xlmr_tokenizer_dir: Path
):
    """Compiled graphs of throwaway tiny models go to a temporary cache, not the user's,
    for the module that asks (later modules see the real cache again).

    Depends on the fixtures that fill the real cache, so they resolve against it first.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDSERVE_CACHE", str(tmp_path_factory.mktemp("embedserve-cache")))
        yield
