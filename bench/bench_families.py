"""Texts/s of each family added in issue #19, at one size, against its reference on CPU.

    python -m bench families --threads 2 --sets short mix --texts 256 --repeats 5

Each family is built here with random weights at one realistic small size (default 6 layers,
hidden 384, 12 heads, intermediate 1,536: all-MiniLM-L6-v2's shape; decoders the same, with 4
key/value heads) and all-MiniLM-L6-v2's WordPiece tokenizer (vocabulary 30,522), saved as a
sentence-transformers folder. The baseline is what the family's tests compare against:

- transformers families (llama, mistral, gemma3_text, deberta-v2, t5): sentence-transformers
  `encode()` on the same folder (torch, CPU);
- remote-code families (nomic_bert, new = GTE, jina_bert): sentence-transformers cannot load
  their code offline, so the PyTorch reference the family's test is written against
  (tests/models/test_<family>.py `_reference`), tokenized and pooled as sentence-transformers
  does (tests/support/remote_code.py), the tokenizer loaded once;
- StaticEmbedding (30,522 x 1,024 rows, static-retrieval-mrl-en-v1's shape, no truncation):
  sentence-transformers' own StaticEmbedding.

Both sides run in this process alternately, `--repeats` times, over the same texts in calls of
`--batch-size` texts, with the same threads (ONNX Runtime intra-op, `torch.set_num_threads`);
the table gives the medians. Weights are random (transformers-scale noise), so the vectors mean
nothing; min cos says the two sides still compute the same function at this size. The folders
and their compiled graphs live in a temporary directory, not in the model cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from embedserve.engine import Engine
from embedserve.loading import LoadOptions
from embedserve.models import resolve_model_dir

from bench.machine import describe_machine
from bench.texts import SETS, make_texts

Encode = Callable[[list[str]], np.ndarray]

ST = "sentence-transformers"
REFERENCE = "PyTorch reference (tests)"
ST_STATIC = "sentence-transformers StaticEmbedding"
FAMILIES = (
    "nomic_bert",
    "new",
    "jina_bert",
    "llama",
    "mistral",
    "gemma3_text",
    "deberta-v2",
    "t5",
    "StaticEmbedding",
)


@dataclass(frozen=True)
class Size:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    static_dimension: int
    max_seq_length: int


@dataclass
class Built:
    folder: Path
    baseline: Encode
    label: str


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    keep = norms > 0  # an empty bag is a zero vector on both sides
    return float(((a64 * b64).sum(1)[keep] / norms[keep]).min()) if keep.any() else 1.0


def _run_batches(encode: Encode, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    parts = [encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    return time.perf_counter() - start, np.concatenate(parts)


# -- the transformers families: tests/support/tiny.py's builder at this size ---------------


def _recipe(family: str, s: Size) -> Any:
    from tests.support.tiny import Recipe

    kv = max(1, s.heads // 3)
    decoder = {
        "hidden_size": s.hidden,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": kv,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": s.max_seq_length,
        "vocab_size": 30522,
        "tie_word_embeddings": False,
    }
    if family in ("llama", "mistral"):
        return Recipe(family, family, decoder, "lasttoken", True, s.max_seq_length)
    if family == "gemma3_text":
        # embeddinggemma's pattern: five sliding-window layers to one global, bidirectional.
        types = ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(s.layers)]
        config = {
            **decoder,
            "head_dim": s.hidden // s.heads,
            "query_pre_attn_scalar": s.hidden // s.heads,
            "pad_token_id": 0,
            "sliding_window": 256,
            "layer_types": types,
            "use_bidirectional_attention": True,
        }
        return Recipe(family, family, config, "mean", True, s.max_seq_length)
    if family == "deberta-v2":  # DeBERTa-v3's layout
        config = {
            "hidden_size": s.hidden,
            "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads,
            "intermediate_size": s.intermediate,
            "max_position_embeddings": s.max_seq_length,
            "vocab_size": 30522,
            "type_vocab_size": 0,
            "relative_attention": True,
            "position_buckets": 256,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
        }
        return Recipe(family, family, config, "mean", True, s.max_seq_length)
    if family == "t5":  # sentence-t5: the encoder, mean pooling, a Dense, Normalize
        config = {
            "d_model": s.hidden,
            "d_kv": s.hidden // s.heads,
            "num_layers": s.layers,
            "num_heads": s.heads,
            "d_ff": s.intermediate,
            "vocab_size": 30522,
        }
        return Recipe(
            family,
            "t5",
            config,
            "mean",
            True,
            s.max_seq_length,
            model_class="T5EncoderModel",
            dense=s.hidden,
        )
    raise ValueError(family)


def _build_transformers(family: str, s: Size, tokenizer_dir: Path, out: Path) -> Built:
    from tests.support.tiny import build, quiet

    folder, st = quiet(build, _recipe(family, s), tokenizer_dir, out)
    return Built(folder, _st_encode(st), ST)


def _st_encode(st: Any) -> Encode:
    def encode(batch: list[str]) -> np.ndarray:
        return st.encode(batch, batch_size=len(batch), convert_to_numpy=True)

    return encode


# -- the remote-code families: their tests' PyTorch references ------------------------------


def _remote_config(family: str, s: Size) -> tuple[dict[str, Any], Any, str, bool]:
    """(config.json, the reference module's `_reference`, pooling, normalize) at size `s`."""
    if family == "nomic_bert":  # nomic-embed-text-v1.5's layout
        from tests.models import test_nomic_bert as t

        sizes = {"n_embd": s.hidden, "n_head": s.heads, "n_layer": s.layers}
        # v1.5's own n_positions (the test's shrunk config has 128: shorter than --max-seq-length).
        config = {**t.V15, **sizes, "n_inner": s.intermediate, "n_positions": 8192}
        return config, t._reference, "mean", True
    sizes = {
        "hidden_size": s.hidden,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "intermediate_size": s.intermediate,
    }
    if family == "new":  # gte-base-en-v1.5's layout
        from tests.models import test_gte as t

        return {**t.BASE_EN, **sizes, "max_position_embeddings": 8192}, t._reference, "cls", False
    if family == "jina_bert":  # jina-embeddings-v2-base-en's layout
        from tests.models import test_jina_bert as t

        return {**t.V2_BASE_EN, **sizes}, t._reference, "mean", True
    raise ValueError(family)


def _build_remote(family: str, s: Size, tokenizer_dir: Path, out: Path) -> Built:
    import torch
    from transformers import AutoTokenizer

    from tests.support.remote_code import save_folder

    config, reference, pooling, normalize = _remote_config(family, s)
    model = reference(config)
    folder = save_folder(
        out,
        model,
        config,
        tokenizer_dir,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=s.max_seq_length,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=s.max_seq_length)

    # tests/support/remote_code.encode's steps, with the tokenizer loaded once.
    def encode(batch: list[str]) -> np.ndarray:
        with torch.no_grad():
            inputs = tokenizer(batch, padding=True, truncation="longest_first", return_tensors="pt")
            mask = inputs["attention_mask"]
            hidden = model(**inputs)
            if pooling == "mean":
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            else:
                pooled = hidden[:, 0]
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.numpy()

    return Built(folder, encode, REFERENCE)


# -- StaticEmbedding --------------------------------------------------------------------------


def _build_static(s: Size, tokenizer_dir: Path, out: Path) -> Built:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.no_truncation()  # static-retrieval-mrl-en-v1's tokenizer pins no limit
    module = StaticEmbedding(tokenizer, embedding_dim=s.static_dimension)
    with torch.no_grad():
        module.embedding.weight.normal_()
    st = SentenceTransformer(modules=[module], device="cpu")
    st.save(str(out))
    return Built(out, _st_encode(st), ST_STATIC)


def build_family(family: str, s: Size, tokenizer_dir: Path, out: Path) -> Built:
    if family == "StaticEmbedding":
        return _build_static(s, tokenizer_dir, out)
    if family in ("nomic_bert", "new", "jina_bert"):
        return _build_remote(family, s, tokenizer_dir, out)
    return _build_transformers(family, s, tokenizer_dir, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench families",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sets", nargs="+", default=["short", "mix"], choices=SETS)
    parser.add_argument("--texts", type=int, default=256, help="texts per set")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per call, both sides")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--static-dimension", type=int, default=1024)
    parser.add_argument("--max-seq-length", type=int, default=512)
    args = parser.parse_args(argv)
    size = Size(
        args.layers,
        args.hidden,
        args.heads,
        args.intermediate,
        args.static_dimension,
        args.max_seq_length,
    )

    import torch
    from transformers.utils import logging as transformers_logging

    # Saving and loading a dozen folders would print a progress bar each between the rows.
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    tokenizer_dir = resolve_model_dir("all-MiniLM-L6-v2")
    options = LoadOptions(
        intra_op_threads=args.threads, inter_op_threads=1, providers="cpu", cache_bytes=0
    )
    print(describe_machine())
    print(
        f"threads={args.threads} repeats={args.repeats} texts={args.texts} "
        f"batch={args.batch_size} size: {size.layers} layers x {size.hidden} hidden, "
        f"{size.heads} heads, intermediate {size.intermediate}; static {size.static_dimension}-d; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    header = (
        f"{'family':<16}{'set':<8}{'tok/text':>9}{'embedserve t/s':>16}{'baseline t/s':>14}"
        f"{'ratio':>8}{'min cos':>10}  baseline"
    )
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-families-") as tmp:
        # Compiled graphs of these throwaway models stay out of the user's cache.
        os.environ["EMBEDSERVE_CACHE"] = str(Path(tmp) / "cache")
        for family in args.families:
            built = build_family(family, size, tokenizer_dir, Path(tmp) / family)
            torch.set_num_threads(args.threads)  # the builders pin torch to one thread
            engine = Engine.from_pretrained(built.folder, options=options)

            def ours(batch: list[str], engine: Engine = engine) -> np.ndarray:
                return engine.embed(batch).embeddings

            for kind in args.sets:
                texts = make_texts(kind, args.texts)
                tokens = int(engine.embed(texts).token_counts.sum())
                ours(texts[:8])  # warm-up
                built.baseline(texts[:8])
                engine_times, base_times = [], []
                for _ in range(args.repeats):
                    seconds, ours_out = _run_batches(ours, texts, args.batch_size)
                    engine_times.append(seconds)
                    seconds, base_out = _run_batches(built.baseline, texts, args.batch_size)
                    base_times.append(seconds)
                e, b = statistics.median(engine_times), statistics.median(base_times)
                n = len(texts)
                print(
                    f"{family:<16}{kind:<8}{tokens / n:>9.1f}{n / e:>16.1f}{n / b:>14.1f}"
                    f"{b / e:>7.2f}x{_cosine_min(ours_out, base_out):>10.6f}  {built.label}",
                    flush=True,
                )
            del engine


if __name__ == "__main__":
    main()
