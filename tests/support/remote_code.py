"""Hub-style folders for remote-code families (config.json with auto_map, the checkpoint's own
tensor names) built from a small PyTorch reference written in the test, and that reference's
vectors as sentence-transformers computes them (its tokenizer call, pooling and Normalize)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import cosines
from tests.support.tiny import TOKENIZER_FILES, _randomize, quiet

# Pooling module configs as sentence-transformers 2.x writes them (what these hub folders hold).
POOLING_FLAGS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}


def save_folder(
    out: Path,
    model: Any,
    config: dict[str, Any],
    tokenizer_dir: Path,
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int,
    prompts: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Randomize ``model`` (a torch module named as the checkpoint names its tensors) and save
    it with ``config`` as config.json, the tokenizer files, and a sentence-transformers stack."""
    from safetensors.torch import save_file

    _randomize(model, seed, None)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copyfile(tokenizer_dir / name, out / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir()
    hidden = model.hidden_size
    flags = {flag: mode == pooling for mode, flag in POOLING_FLAGS.items()}
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, **flags}, indent=2)
    )
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    st_config = {"prompts": prompts or {}, "default_prompt_name": None}
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    return out


def encode(
    model: Any,
    tokenizer_dir: Path,
    texts: list[str],
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's vectors and token counts, tokenized and pooled as sentence-transformers 6
    does (tokenizer(padding=True, truncation="longest_first") at max_seq_length; mean over the
    attention mask or the first token; then Normalize)."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=max_seq_length)
    vectors, counts = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation="longest_first",
                return_tensors="pt",
            )
            mask = batch["attention_mask"]
            hidden = model(**batch)
            if pooling == "mean":
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                pooled = hidden[:, 0]
            else:
                raise ValueError(pooling)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            vectors.append(pooled.numpy())
            counts.append(mask.sum(1).numpy())
    return np.concatenate(vectors).astype(np.float32), np.concatenate(counts)


def mixed_texts(reference: dict, count: int) -> list[str]:
    """``count`` real texts spread over lengths (the longest past every test's max_seq_length),
    then the edge texts."""
    from tests.support.edge_texts import EDGE_TEXTS

    order = np.argsort(reference["tokens_truncated"], kind="stable")
    picks = order[np.linspace(0, len(order) - 1, count).astype(int)]
    return [reference["texts"][i] for i in picks] + EDGE_TEXTS


# --- what the family tests share: their variants built, the reference's vectors, the checks ----


@dataclass(frozen=True)
class Built:
    """One variant's saved folder, the reference model it was saved from, the variant's entry
    (pooling, normalize, max_seq_length) and the tokenizer folder both read."""

    folder: Path
    model: Any
    variant: dict[str, Any]
    tokenizer_dir: Path

    def want(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The reference's vectors and token counts for ``texts`` (``encode``)."""
        return quiet(
            encode,
            self.model,
            self.tokenizer_dir,
            texts,
            pooling=self.variant["pooling"],
            normalize=self.variant["normalize"],
            max_seq_length=self.variant["max_seq_length"],
        )


def build_variants(
    tmp_path_factory: Any,
    variants: dict[str, dict[str, Any]],
    base: dict[str, Any],
    reference: Callable[[dict[str, Any]], Any],
    tokenizers: dict[str, Path],
    prompts: dict[str, str] | None = None,
) -> dict[str, Built]:
    """Each variant (its ``config`` over ``base``, its ``tokenizer`` name, "minilm" if none) as a
    reference model from ``reference(config)`` saved by ``save_folder``."""
    import torch

    torch.set_num_threads(1)
    out = {}
    for name, variant in variants.items():
        config = {**base, **variant["config"]}
        model = reference(config)
        tokenizer_dir = tokenizers[variant.get("tokenizer", "minilm")]
        folder = save_folder(
            tmp_path_factory.mktemp(name),
            model,
            config,
            tokenizer_dir,
            pooling=variant["pooling"],
            normalize=variant["normalize"],
            max_seq_length=variant["max_seq_length"],
            prompts=prompts,
        )
        out[name] = Built(folder, model, variant, tokenizer_dir)
    return out


def check_precision_floor(built: Built, texts: list[str], precision: str) -> None:
    """The folder compiled at ``precision`` keeps that precision's cosine floors to the reference."""
    from embedserve.engine import Engine
    from embedserve.precision import get_precision

    floor = get_precision(precision)
    want, _ = built.want(texts)
    got = Engine.from_pretrained(built.folder, precision=precision).embed(texts)
    cos = cosines(got.embeddings, want)
    assert cos.min() >= floor.min_cosine and cos.mean() >= floor.mean_cosine, (
        cos.min(),
        cos.mean(),
    )


def edited_copy(folder: Path, edit: dict[str, Any], out: Path) -> Path:
    """A copy of ``folder`` at ``out`` whose config.json has ``edit``'s fields over its own."""
    copy = shutil.copytree(folder, out)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **edit}))
    return copy
