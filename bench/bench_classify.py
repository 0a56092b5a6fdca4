"""Classification texts/s against transformers' `pipeline("text-classification", top_k=None)`, and
LLM-reranker pairs/s against the Qwen3-Reranker model card's code, same inputs, same threads.

    python -m bench classify --threads 2 --texts 256 --sets short medium long mix
    python -m bench classify --task yes-no --docs 64

`classify`: all-MiniLM-L6-v2's encoder with a random 3-label head (BertForSequenceClassification,
limit 512), texts of the given sets. `yes-no`: a Qwen3ForCausalLM of MiniLM-L6's size (6 layers,
384 wide, GQA 12/4 heads, MiniLM's vocabulary) with random weights, one query against `--docs`
documents per call through the model card's prompt. Both built once and kept in the cache. Each
side runs in this process, alternately, so a noisy neighbour hurts both; the table gives the
median of `--repeats` runs and the largest score difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from embedserve.classification import Classifier
from embedserve.prompt_pairs import DEFAULT_INSTRUCTION, PREFIX, SUFFIX
from embedserve.reranker import Reranker

from bench.cross_encoder import QUERIES
from bench.machine import describe_machine
from bench.texts import SETS, make_texts

LABELS = ["negative", "neutral", "positive"]


def _build(name: str, make: Callable[[Path], None]) -> Path:
    """A model folder in the cache, built once (beside its place, then renamed)."""
    from embedserve.models.cache import cache_root

    folder = cache_root() / "bench" / name
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        make(building)
        try:
            building.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def minilm_classifier() -> Path:
    def make(out: Path) -> None:
        import torch
        from embedserve.models import resolve_model_dir
        from transformers import AutoTokenizer, BertForSequenceClassification

        source = resolve_model_dir("all-MiniLM-L6-v2")
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(
            str(source),
            num_labels=3,
            id2label=dict(enumerate(LABELS)),
            label2id={n: i for i, n in enumerate(LABELS)},
        )
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(source), model_max_length=512).save_pretrained(str(out))

    return _build("minilm-l6-classifier", make)


def qwen3_yes_no() -> Path:
    def make(out: Path) -> None:
        import torch
        import transformers
        from embedserve.models import resolve_model_dir

        source = resolve_model_dir("all-MiniLM-L6-v2")
        config = transformers.Qwen3Config(
            vocab_size=30522,
            hidden_size=384,
            intermediate_size=1536,
            num_hidden_layers=6,
            num_attention_heads=12,
            num_key_value_heads=4,
            head_dim=32,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
            pad_token_id=0,
        )
        torch.manual_seed(0)
        transformers.Qwen3ForCausalLM(config).eval().save_pretrained(str(out))
        tokenizer = json.loads((source / "tokenizer.json").read_text())
        tokenizer.update(post_processor=None, padding=None, truncation=None)
        (out / "tokenizer.json").write_text(json.dumps(tokenizer))
        (out / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "padding_side": "left",
                    "pad_token": "[PAD]",
                    "unk_token": "[UNK]",
                    "model_max_length": 4096,
                }
            )
        )

    return _build("qwen3-6l-yes-no", make)


def _median_rate(
    run: Callable[[], np.ndarray], count: int, repeats: int
) -> tuple[float, np.ndarray]:
    seconds, out = [], np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        seconds.append(time.perf_counter() - start)
    return count / statistics.median(seconds), out


def _classify(args: argparse.Namespace) -> None:
    folder = minilm_classifier()
    classifier = Classifier.from_pretrained(
        folder, intra_op_threads=args.threads, inter_op_threads=1, providers="cpu"
    )
    pipe = None
    if not args.no_baseline:
        import torch
        from transformers import pipeline

        torch.set_num_threads(args.threads)
        pipe = pipeline("text-classification", model=str(folder), device="cpu", top_k=None)
    print(f"task=classify labels=3 threads={args.threads} repeats={args.repeats}")
    header = f"{'set':<10}{'texts':>7}{'tok/text':>9}{'embedserve t/s':>16}"
    if pipe is not None:
        header += f"{'pipeline t/s':>14}{'ratio':>8}{'max |diff|':>12}"
    print(header, flush=True)
    for kind in args.sets:
        texts = make_texts(kind, args.texts)
        tokens = int(classifier.prepare_texts(texts).token_counts.sum())

        def ours(texts: list[str] = texts) -> np.ndarray:
            rows = classifier.predict(texts)
            return np.array([[{x.label: x.score for x in r}[n] for n in LABELS] for r in rows])

        ours()  # warm-up
        rate, mine = _median_rate(ours, len(texts), args.repeats)
        row = f"{kind:<10}{len(texts):>7}{tokens / len(texts):>9.1f}{rate:>16.1f}"
        if pipe is not None:

            def theirs(texts: list[str] = texts) -> np.ndarray:
                rows = pipe(texts, truncation=True, batch_size=32)
                return np.array(
                    [[{x["label"]: x["score"] for x in r}[n] for n in LABELS] for r in rows]
                )

            theirs()
            base, want = _median_rate(theirs, len(texts), args.repeats)
            diff = float(np.abs(mine - want).max())
            row += f"{base:>14.1f}{rate / base:>7.2f}x{diff:>12.2e}"
        print(row, flush=True)


def _card(folder: Path, threads: int) -> Callable[[str, list[str]], np.ndarray]:
    """Qwen3-Reranker's model card code (batch of 32, left padding)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    no, yes = tokenizer.convert_tokens_to_ids("no"), tokenizer.convert_tokens_to_ids("yes")
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    room = 4096 - len(prefix) - len(suffix)

    def score(query: str, docs: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(docs), 32):
            texts = [
                f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {query}\n<Document>: {d}"
                for d in docs[start : start + 32]
            ]
            inputs = tokenizer(
                texts,
                padding=False,
                truncation="longest_first",
                return_attention_mask=False,
                max_length=room,
            )
            inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
            inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt")
            with torch.no_grad():
                last = model(**inputs).logits[:, -1, :]
                pair = torch.stack([last[:, no], last[:, yes]], dim=1)
                out.extend(torch.softmax(pair, dim=1)[:, 1].tolist())
        return np.array(out)

    return score


def _yes_no(args: argparse.Namespace) -> None:
    folder = qwen3_yes_no()
    reranker = Reranker.from_pretrained(
        folder,
        intra_op_threads=args.threads,
        inter_op_threads=1,
        providers="cpu",
        max_length=4096,
    )
    card = None if args.no_baseline else _card(folder, args.threads)
    print(f"task=yes-no threads={args.threads} repeats={args.repeats} docs/query={args.docs}")
    header = f"{'set':<10}{'pairs':>7}{'tok/pair':>9}{'embedserve p/s':>16}"
    if card is not None:
        header += f"{'card p/s':>10}{'ratio':>8}{'max |diff|':>12}"
    print(header, flush=True)
    for kind in args.sets:
        docs = make_texts(kind, args.docs)
        pairs = len(QUERIES) * len(docs)
        tokens = sum(int(reranker.prepare(q, docs).token_counts.sum()) for q in QUERIES)

        def ours(docs: list[str] = docs) -> np.ndarray:
            return np.concatenate([reranker.score([(q, d) for d in docs])[:, 1] for q in QUERIES])

        ours()
        rate, mine = _median_rate(ours, pairs, args.repeats)
        row = f"{kind:<10}{pairs:>7}{tokens / pairs:>9.1f}{rate:>16.1f}"
        if card is not None:

            def theirs(docs: list[str] = docs) -> np.ndarray:
                return np.concatenate([card(q, docs) for q in QUERIES])

            base, want = _median_rate(theirs, pairs, args.repeats)
            row += f"{base:>10.1f}{rate / base:>7.2f}x{float(np.abs(mine - want).max()):>12.2e}"
        print(row, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench classify",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--task", choices=["classify", "yes-no"], default="classify")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256, help="texts per run (classify)")
    parser.add_argument("--docs", type=int, default=64, help="documents per query (yes-no)")
    parser.add_argument(
        "--sets", nargs="+", default=["short", "medium", "long", "mix"], choices=SETS
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    print(describe_machine())
    (_classify if args.task == "classify" else _yes_no)(args)


if __name__ == "__main__":
    main()
