"""What a model folder holds: an embedder (encoder + pooling), a reranker (a cross-encoder) or a
sparse encoder (SPLADE).

config.json's `architectures` says it: a `*ForSequenceClassification` head scores pairs, anything
else is served as an encoder whose states are pooled, unless sentence-transformers' modules.json
ends a `*ForMaskedLM` in SpladePooling (a SparseEncoder folder, `models.splade_layout`): then it
gives SPLADE's sparse vectors. A bare masked LM is not taken for SPLADE (all-mpnet-base-v2's config says
MPNetForMaskedLM), and a BGE-M3 folder's own kind stays embedder (its dense vector); the server
serves its sparse and ColBERT heads as extra kinds of the same model (server/registry.py), and a
bare masked LM gives sparse vectors through the library's `SparseEncoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.models.config import check_max_length, max_seq_length
from embedserve.models.splade_layout import is_splade
from embedserve.models.st_modules import read_json
from embedserve.scoring import NONE, SIGMOID, SOFTMAX

EMBEDDER = "embedder"
# An LLM reranker's default limit: the 8,192 tokens Qwen3-Reranker's model card truncates to.
YES_NO_MAX_LENGTH = 8192
RERANKER = "reranker"
SPARSE = "sparse"
# Token vectors scored by MaxSim (PyLate's ColBERT layout: models/colbert_config.py).
LATE_INTERACTION = "late-interaction"

# A cross-encoder's declared activation, as the import path sentence-transformers saves
# (`fullname` of the module: the first of each) or a hand-written config's shorter one, and the
# function it is. CrossEncoder would import any `torch.*` path; these are the ones it writes.
ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": NONE,
    "torch.nn.Identity": NONE,
    "torch.nn.modules.activation.Sigmoid": SIGMOID,
    "torch.nn.Sigmoid": SIGMOID,
    "torch.nn.modules.activation.Softmax": SOFTMAX,
    "torch.nn.Softmax": SOFTMAX,
}


def read_hf_config(directory: Path) -> dict[str, Any]:
    data = read_json(directory / "config.json")
    return data if isinstance(data, dict) else {}


def is_classifier(hf: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForSequenceClassification") for a in hf.get("architectures") or [])


def is_masked_lm(hf: dict[str, Any]) -> bool:
    return any(str(a).endswith("ForMaskedLM") for a in hf.get("architectures") or [])


def is_yes_no_reranker(directory: Path, hf: dict[str, Any]) -> bool:
    """A causal LM served as a reranker that answers "yes" or "no" (Qwen3-Reranker): config.json
    names a `*ForCausalLM` and no sentence-transformers modules pool it (an embedder made from a
    causal LM, such as Qwen3-Embedding, ships modules.json)."""
    causal = any(str(a).endswith("ForCausalLM") for a in hf.get("architectures") or [])
    return causal and not (directory / "modules.json").exists()


def not_an_embedder(directory: Path) -> str | None:
    """Why the model in `directory` (by `model_kind`) gives no embeddings and what serves it, or
    None for an embedder: said before anything is compiled, as its graph has no [batch, sequence,
    hidden] output to pool and compiling it as an embedder's leaves a useless graph in the cache."""
    kind = model_kind(directory)
    if kind == EMBEDDER:
        return None
    if kind == RERANKER and is_yes_no_reranker(directory, read_hf_config(directory)):
        what = "an LLM reranker (config.json names a *ForCausalLM and there is no modules.json)"
        served = "the rerank and score routes and /predict"
    elif kind == RERANKER:
        what = "a cross-encoder or classifier (config.json names a *ForSequenceClassification)"
        served = "/v1/rerank, /v1/score, /predict, /classify and /v1/classify"
    elif kind == SPARSE:
        what = "a SPLADE sparse encoder"
        served = "/embed_sparse (in Python: embedserve.SparseEncoder)"
    else:
        what = "a ColBERT late-interaction model"
        served = "/embed_all, /v1/rerank and /v1/score"
    return (
        f"{directory} is {what}, not an embedding model: `embedserve serve --model` serves it "
        f"on {served}"
    )


def model_kind(directory: Path) -> str:
    hf = read_hf_config(directory)
    if is_classifier(hf) or is_yes_no_reranker(directory, hf):
        return RERANKER
    if is_splade(directory):
        return SPARSE
    from embedserve.models.colbert_config import is_late_interaction

    return LATE_INTERACTION if is_late_interaction(directory) else EMBEDDER


@dataclass(frozen=True)
class RerankerConfig:
    name: str
    directory: Path
    max_length: int
    num_labels: int
    architecture: str
    labels: tuple[str, ...]
    # transformers' `problem_type`: "multi_label_classification" scores each label on its own.
    problem_type: str | None = None
    # A causal LM whose "no"/"yes" logits are its two labels (prompt_pairs), not a classifier.
    yes_no: bool = False
    # Whether config.json names the labels (num_labels or id2label); if not, the graph's count.
    labels_named: bool = True
    # The function the folder declares for CrossEncoder's scores (`declared_activation`); None:
    # CrossEncoder's default for the head.
    activation: str | None = None


def declared_activation(directory: Path, hf: dict[str, Any]) -> str | None:
    """The activation sentence-transformers' CrossEncoder applies to this folder's logits, as a
    scoring function, where the folder names one; CrossEncoder reads, first to last:
    config_sentence_transformers.json's `activation_fn` (v5+, beside modules.json), config.json's
    `sentence_transformers.activation_fn` (v4) and `sbert_ce_default_activation_function` (<v4)."""
    # CrossEncoder reads config_sentence_transformers.json only for a folder of its own modules.
    st_config = (directory / "modules.json").exists() and read_json(
        directory / "config_sentence_transformers.json"
    )
    st_section = hf.get("sentence_transformers")
    # CrossEncoder reads the older key only when config.json's section has no `activation_fn`:
    # a null there means its default for the head, whatever the older key says.
    legacy = (
        None
        if isinstance(st_section, dict) and "activation_fn" in st_section
        else hf.get("sbert_ce_default_activation_function")
    )
    found = [
        (where, value)
        for where, value in (
            (
                "config_sentence_transformers.json's activation_fn",
                st_config.get("activation_fn") if isinstance(st_config, dict) else None,
            ),
            (
                "config.json's sentence_transformers.activation_fn",
                st_section.get("activation_fn") if isinstance(st_section, dict) else None,
            ),
            (
                "config.json's sbert_ce_default_activation_function",
                legacy,
            ),
        )
        if value is not None
    ]
    if not found:
        return None
    where, value = found[0]
    if value not in ACTIVATIONS:
        raise ValueError(
            f"{directory}: {where} is {value!r}; supported activations: "
            f"{', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[value]


def load_reranker_config(
    directory: Path, name: str, max_length: int | None = None
) -> RerankerConfig:
    """The cross-encoder's limit and labels, from config.json and tokenizer_config.json.

    The limit is an embedder's (models.config.max_seq_length: what `CrossEncoder` truncates to,
    within the positions a text can use); `max_length` overrides it.
    """
    hf = read_hf_config(directory)
    if max_length is not None:
        check_max_length(directory, max_length)
    if is_yes_no_reranker(directory, hf):
        limit = min(max_seq_length(directory, hf), YES_NO_MAX_LENGTH)
        return RerankerConfig(
            name=name,
            directory=directory,
            max_length=max_length or limit,
            num_labels=2,
            architecture=str(hf["architectures"][0]),
            labels=("no", "yes"),
            yes_no=True,
        )
    if not is_classifier(hf):
        raise ValueError(
            f"{directory}: config.json's architectures {hf.get('architectures')} name no "
            "*ForSequenceClassification head; this is not a cross-encoder"
        )
    id2label = hf.get("id2label") or {}
    # A config.json that names no labels has the graph's count (heads.num_labels): two here, and
    # `labels_named` tells the Reranker to take the graph's word for it.
    named = hf.get("num_labels") or len(id2label)
    num_labels = int(named or 2)
    labels = tuple(
        str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels)
    )
    return RerankerConfig(
        name=name,
        directory=directory,
        max_length=max_length or max_seq_length(directory, hf),
        num_labels=num_labels,
        architecture=str(hf["architectures"][0]),
        labels=labels,
        problem_type=hf.get("problem_type"),
        labels_named=bool(named),
        activation=declared_activation(directory, hf),
    )
