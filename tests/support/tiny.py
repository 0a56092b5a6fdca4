"""Tiny random-weight transformers models saved as sentence-transformers folders, and the
checkpoint rewrites (prefixes, fp16/bf16, shards, 4.x-style configs) embedserve must read."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def tiny_bert_folder(
    folder: Path, tokenizer_dir: Path, *, edit: Any = None, max_seq_length: int = 64
) -> Path:
    """A seeded one-layer random BertModel (width 32, 4 heads) saved in `folder` with
    `tokenizer_dir`'s tokenizer files and a sentence_bert_config.json; `edit(model)` may change
    its weights before it is saved."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, folder / name)
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length})
    )
    return folder


@dataclass(frozen=True)
class Recipe:
    """One tiny model: a transformers config, how to pool, and which tokenizer to use."""

    name: str
    model_type: str
    config: dict[str, Any]
    pooling: str
    normalize: bool
    max_seq_length: int
    tokenizer: str = "minilm"  # or "xlmr"
    # A *For* class to save the checkpoint from (prefixed names plus a task head).
    model_class: str | None = None
    # Round weights to what this dtype can hold, so a copy stored in it is the same model.
    exact_in: str | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # A bias-free identity Dense module after pooling (sentence-t5's), with this many outputs.
    dense: int | None = None


def _randomize(model: Any, seed: int, exact_in: str | None) -> None:
    """Weights of a trained-looking scale: transformers' init (std 0.02, norms at 1) would
    make attention nearly uniform and hide masking or position mistakes."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            is_norm_weight = "norm" in name.lower() and name.endswith("weight")
            p.copy_(1.0 + noise * 0.5 if is_norm_weight else noise)
            if exact_in is not None:
                p.copy_(p.to(getattr(torch, exact_in)).float())


def build(recipe: Recipe, tokenizer_dir: Path, out: Path) -> tuple[Path, Any]:
    """Save ``recipe`` as a sentence-transformers folder; returns it and the loaded model.

    The raw transformers checkpoint (as saved from ``model_class``) is kept in ``out/hf``.
    """
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Dense,
        Normalize,
        Pooling,
        Transformer,
    )

    torch.set_num_threads(1)  # tiny matrices: threads only add contention
    torch.manual_seed(recipe.seed)
    config = transformers.AutoConfig.for_model(recipe.model_type, **recipe.config)
    if recipe.model_class is not None:
        config.architectures = [recipe.model_class]
        model = getattr(transformers, recipe.model_class)(config)
    else:
        model = transformers.AutoModel.from_config(config)
    _randomize(model, recipe.seed, recipe.exact_in)
    hf_dir = out / "hf"
    model.save_pretrained(hf_dir)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copyfile(tokenizer_dir / name, hf_dir / name)
    # The tokenizer from its own folder: transformers 5 would otherwise pick a tokenizer class
    # by model_type (Qwen2Tokenizer for qwen2) and re-read the vocabulary as something else.
    transformer = Transformer(
        str(hf_dir),
        max_seq_length=recipe.max_seq_length,
        tokenizer_name_or_path=str(tokenizer_dir),
    )
    modules = [transformer, Pooling(config.hidden_size, pooling_mode=recipe.pooling)]
    if recipe.dense is not None:
        modules.append(
            Dense(
                config.hidden_size,
                recipe.dense,
                bias=False,
                activation_function=torch.nn.Identity(),
            )
        )
    if recipe.normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, device="cpu")
    st.eval()
    st_dir = out / "st"
    st.save(str(st_dir))
    if recipe.model_class is not None:
        # sentence-transformers re-saves the bare model; serve the *For* checkpoint instead.
        for stale in st_dir.glob("model*.safetensors*"):
            stale.unlink()
        shutil.copyfile(hf_dir / "model.safetensors", st_dir / "model.safetensors")
        shutil.copyfile(hf_dir / "config.json", st_dir / "config.json")
    return st_dir, st


def reference(st: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """sentence-transformers' vectors and token counts for ``texts``."""
    import torch

    with torch.no_grad():
        vectors = st.encode(texts, batch_size=8, convert_to_numpy=True, show_progress_bar=False)
        counts = st.tokenize(texts)["attention_mask"].sum(dim=1).numpy()
    return np.asarray(vectors, dtype=np.float32), np.asarray(counts)


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run third-party model code with its deprecation chatter silenced (pytest treats
    warnings as errors, and these warn about their own internals, not about our use)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --- rewrites of a saved folder ---------------------------------------------------------


def rewrite(
    src: Path,
    dst: Path,
    *,
    prefix: str = "",
    dtype: str | None = None,
    shards: int = 1,
    config: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> Path:
    """Copy folder ``src`` to ``dst`` with its weights renamed/cast/sharded and its
    config.json edited (``config`` keys set, ``drop`` keys removed)."""
    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    cast = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}.get(dtype or "")
    renamed = {
        prefix + k: (v.astype(cast) if cast is not None and v.dtype == np.float32 else v)
        for k, v in weights.items()
    }
    if shards == 1:
        save_file(renamed, str(dst / "model.safetensors"))
    else:
        names = sorted(renamed)
        weight_map = {}
        for n in range(shards):
            shard = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
            part = names[n::shards]
            save_file({k: renamed[k] for k in part}, str(dst / shard))
            weight_map.update(dict.fromkeys(part, shard))
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    raw = json.loads((dst / "config.json").read_text())
    raw.update(config or {})
    for key in drop:
        raw.pop(key, None)
    (dst / "config.json").write_text(json.dumps(raw, indent=2))
    return dst
