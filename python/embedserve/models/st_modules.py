"""sentence-transformers' module stack (modules.json), as written by versions 2.x through 6.x.

Only what happens after the transformer matters here: the Pooling module's mode and
include_prompt, Dense heads, and whether a Normalize module ends the stack. A StaticEmbedding
input module (model2vec / static-retrieval folders) takes the transformer's and the Pooling
module's place: the mean of its token rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve import fileio

# sentence-transformers' names (both config formats) -> the pooling kernel's names.
POOLING_MODES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weightedmean",
    "lasttoken": "last",
}
# The pre-5.x flags, in the order sentence-transformers concatenates them.
LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Modules that change nothing at inference time.
_PASS_THROUGH = {"Dropout"}
STATIC = "StaticEmbedding"
_KNOWN = {"Transformer", "Pooling", "Dense", "Normalize", STATIC} | _PASS_THROUGH


class ModelConfigError(ValueError):
    """The model folder's configuration asks for something embedserve cannot do."""


# Joins the kernel modes a Pooling concatenates, in its order ("cls+mean"), into one mode name.
CONCATENATED = "+"


def pooling_modes(mode: str) -> list[str]:
    """The kernel modes whose vectors a Pooling `mode` concatenates, in order."""
    return mode.split(CONCATENATED)


@dataclass(frozen=True)
class Pooling:
    """The kernel's mode name (several joined by CONCATENATED), and whether prompt tokens are
    pooled; `dimension`: the token vectors' width (the config's), not the pooled one's."""

    mode: str = "mean"
    include_prompt: bool = True
    dimension: int | None = None

    def width(self, hidden: int | None) -> int | None:
        """The pooled vectors' width over token vectors `hidden` wide (the config's if it says)."""
        hidden = self.dimension or hidden
        return hidden * len(pooling_modes(self.mode)) if hidden else None


@dataclass(frozen=True)
class ModuleStack:
    pooling: Pooling
    dense_paths: tuple[Path, ...]
    normalize: bool
    # The StaticEmbedding module's folder (its tokenizer.json and embedding table), if any.
    static: Path | None = None


def read_json(path: Path) -> Any:
    """A model folder's JSON file, None if absent; a ModelConfigError naming it if broken."""
    try:
        return fileio.read_json(path)
    except ValueError as exc:
        raise ModelConfigError(str(exc)) from exc


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON file that must hold an object (a module's config.json), None if absent."""
    data = read_json(path)
    if data is not None and not isinstance(data, dict):
        raise ModelConfigError(f"{path} is not a JSON object")
    return data


def whole_number(value: Any, path: Path, key: str) -> int:
    """`value`, `key`'s in `path`, as a size: a whole number, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"{path}: {key} is {value!r}; it must be a whole number, at least 1")
    return value


def module_config(directory: Path, kind: str, folder: Path) -> dict[str, Any]:
    """The config.json of `directory`'s `kind` module at `folder`, which sentence-transformers
    needs to load it: read as defaults, a Pooling's mode or a Dense's activation could be
    other than the author's, and the vectors with them."""
    config = read_object(folder / "config.json")
    if config is None:
        raise ModelConfigError(
            f"{directory / 'modules.json'} names a {kind} module at {folder}, which has no "
            "config.json"
        )
    return config


def read_modules(directory: Path) -> list[dict[str, Any]]:
    """modules.json's entries in `idx` order, [] without one; a ModelConfigError naming the file
    when it is not a list of objects with a string `type` (sentence-transformers could not load
    it either)."""
    path = directory / "modules.json"
    modules = read_json(path)
    if modules is None:
        return []
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type"), str) for m in modules
    ):
        raise ModelConfigError(
            f"{path} is not a list of modules like "
            '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]'
        )
    try:
        return sorted(modules, key=lambda m: int(m.get("idx", 0)))
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"{path}: a module's idx is not a number ({exc})") from exc


def class_name(type_path: str) -> str:
    """`sentence_transformers.models.Pooling` (2.x) and `…sentence_transformer.modules.pooling.Pooling`
    (5.x/6.x) both name the class last."""
    return type_path.rsplit(".", 1)[-1]


def load_module_stack(directory: Path) -> ModuleStack:
    ordered = read_modules(directory)
    listing = directory / "modules.json"
    if not ordered:
        # A bare transformer folder: TEI's defaults (mean pooling, normalized output).
        return ModuleStack(read_pooling(directory / "1_Pooling"), (), True)
    pooling: Pooling | None = None
    dense: list[Path] = []
    normalize = False
    static: Path | None = None
    for index, module in enumerate(ordered):
        kind = class_name(str(module.get("type", "")))
        path = directory / str(module.get("path") or "")
        if kind not in _KNOWN:
            raise ModelConfigError(
                f"{listing}: sentence-transformers module {module.get('type')!r} is not "
                f"supported (supported: {', '.join(sorted(_KNOWN))})"
            )
        if normalize and kind not in ("Normalize", *_PASS_THROUGH):
            # The engine pools, runs the Dense heads, then normalizes (after any Matryoshka
            # cut); a stack that normalizes first would get other vectors.
            order = ", ".join(class_name(str(m.get("type", ""))) for m in ordered)
            raise ModelConfigError(
                f"{listing} runs {kind} after Normalize ({order}); "
                "embedserve supports Normalize only last: Transformer, Pooling, Dense..., "
                "Normalize"
            )
        if kind == STATIC:
            if index != 0:
                raise ModelConfigError(f"{listing}: StaticEmbedding is not the first module")
            # nn.EmbeddingBag's default mode: the mean of the text's token rows.
            pooling, static = Pooling("mean"), path
        elif kind == "Pooling":
            pooling = read_pooling(path, module_config(directory, kind, path))
        elif kind == "Dense":
            if pooling is None:
                raise ModelConfigError(f"{listing}: a Dense module before Pooling is not supported")
            module_config(directory, kind, path)
            dense.append(path)
        elif kind == "Normalize":
            normalize = True
    if pooling is None:
        raise ModelConfigError(f"{listing} has no Pooling module")
    return ModuleStack(pooling, tuple(dense), normalize, static)


def static_embedding_dir(directory: Path) -> Path | None:
    """The folder of `directory`'s StaticEmbedding module, None for a transformer model."""
    modules = read_modules(directory)
    if not modules:
        return None
    first = modules[0]
    if class_name(str(first.get("type", ""))) != STATIC:
        return None
    return directory / str(first.get("path") or "")


def read_pooling(folder: Path, config: dict[str, Any] | None = None) -> Pooling:
    """The pooling config in either format: `pooling_mode: "mean"` (or a list of modes) or
    `pooling_mode_mean_tokens: true` (several true: concatenated, in LEGACY_POOLING_FLAGS' order).

    `config` is `folder`'s config.json, if read already; a folder without one pools by the mean.
    """
    path = folder / "config.json"
    if config is None:
        config = read_object(path) or {}
    dimension = config.get("embedding_dimension") or config.get("word_embedding_dimension")
    include_prompt = bool(config.get("include_prompt", True))
    named = config.get("pooling_mode")
    if named is None:
        named = [mode for flag, mode in LEGACY_POOLING_FLAGS.items() if config.get(flag)] or [
            "mean"
        ]
    modes = [named] if isinstance(named, str) else named
    if (
        not isinstance(modes, (list, tuple))
        or not modes
        or not all(isinstance(m, str) for m in modes)
    ):
        raise ModelConfigError(
            f"{path}: pooling_mode is {named!r}; it must be a mode's name or a list of them"
        )
    for mode in modes:
        if mode not in POOLING_MODES:
            raise ModelConfigError(
                f"{path}: pooling mode {mode!r} is not supported (supported: {sorted(POOLING_MODES)})"
            )
    size = whole_number(dimension, path, "embedding_dimension") if dimension else None
    # sentence-transformers concatenates several modes' vectors in the order listed.
    return Pooling(CONCATENATED.join(POOLING_MODES[m] for m in modes), include_prompt, size)
