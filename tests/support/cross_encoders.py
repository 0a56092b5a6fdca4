"""Tiny random-weight cross-encoders built with transformers, saved as model folders.

No reranker weights can be downloaded here (no model hub; none ship on the package index that we
know of), so these are the fidelity proof: random weights exercise every tensor of the graph, and
sentence-transformers' CrossEncoder loads the same folder as the reference.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

# XLM-R's vocabulary: the size of `xlmr_tokenizer_dir`'s Unigram tokenizer.
XLMR_VOCAB = 250_002

# Real queries for the license paragraphs of tests/data: short, medium, and one past any limit.
QUERIES = [
    "warranty",
    "Can I link a proprietary program against the library?",
    (
        "What must I include when I distribute copies of the source code in any medium, and may "
        "I charge a fee for the physical act of transferring a copy?"
    ),
]


def bert_cross_encoder(
    out: Path,
    tokenizer_dir: Path,
    *,
    num_labels: int = 1,
    max_length: int = 128,
    seed: int = 0,
    layers: int = 2,
) -> Path:
    """BertForSequenceClassification (pooler + classifier) with the given folder's WordPiece."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    return _save_random(BertForSequenceClassification, config, tokenizer, out, seed)


def roberta_tokenizer(texts: list[str], max_length: int):
    """A byte-level BPE trained on `texts`, with RoBERTa's specials and `<s> A </s></s> B </s>`."""
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=2000, special_tokens=specials, show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


def tiny_xlmr_config(vocab_size: int, max_length: int, **fields: Any):
    """An XLMRobertaConfig at the tests' tiny size (hidden 32, 2 layers, 4 heads) with XLM-R's
    special ids and room for `max_length` tokens (its positions start after the padding id)."""
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_length + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        **fields,
    )


def xlm_roberta_cross_encoder(
    out: Path, texts: list[str], *, num_labels: int = 1, max_length: int = 128, seed: int = 1
) -> Path:
    """XLMRobertaForSequenceClassification (dense + tanh on <s>, out_proj), RoBERTa tokens."""
    from transformers import XLMRobertaForSequenceClassification

    tokenizer = roberta_tokenizer(texts, max_length)
    config = tiny_xlmr_config(len(tokenizer), max_length, num_labels=num_labels)
    return _save_random(XLMRobertaForSequenceClassification, config, tokenizer, out, seed)


def xlm_roberta_cross_encoder_over(
    out: Path, tokenizer_dir: Path, *, max_length: int = 128, seed: int = 7
) -> Path:
    """XLMRobertaForSequenceClassification over a real XLM-R tokenizer folder's files, copied as
    their authors saved them: `save_pretrained` would write transformers 5's own pipeline."""
    import json
    import shutil

    from transformers import XLMRobertaForSequenceClassification

    config = tiny_xlmr_config(XLMR_VOCAB, max_length, num_labels=1)
    _save_random(XLMRobertaForSequenceClassification, config, None, out, seed)
    shutil.copyfile(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
    tokenizer_config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = max_length
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return out


def mpnet_cross_encoder(
    out: Path, texts: list[str], *, num_labels: int = 1, max_length: int = 128, seed: int = 6
) -> Path:
    """MPNetForSequenceClassification (dense + tanh on <s>, out_proj), RoBERTa-style pairs."""
    from transformers import MPNetConfig, MPNetForSequenceClassification

    tokenizer = roberta_tokenizer(texts, max_length)
    config = MPNetConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_length + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=num_labels,
    )
    return _save_random(MPNetForSequenceClassification, config, tokenizer, out, seed)


def _wordpiece(tokenizer_dir: Path, max_length: int):
    """The folder's BERT WordPiece, without token types (models that have none)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(tokenizer_dir),
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


def distilbert_cross_encoder(
    out: Path, tokenizer_dir: Path, *, num_labels: int = 1, max_length: int = 128, seed: int = 2
) -> Path:
    """DistilBertForSequenceClassification (pre_classifier + ReLU, classifier)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    tokenizer = _wordpiece(tokenizer_dir, max_length)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        max_position_embeddings=512,
        num_labels=num_labels,
        pad_token_id=0,
    )
    return _save_random(DistilBertForSequenceClassification, config, tokenizer, out, seed)


def modernbert_cross_encoder(
    out: Path,
    tokenizer_dir: Path,
    *,
    pooling: str = "mean",
    num_labels: int = 1,
    max_length: int = 128,
    seed: int = 4,
) -> Path:
    """ModernBertForSequenceClassification (head dense + GELU + norm on CLS or the mean,
    classifier), with a global layer and two 16-token sliding-window layers."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    tokenizer = _wordpiece(tokenizer_dir, max_length)
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        local_attention=16,
        global_attn_every_n_layers=3,
        classifier_pooling=pooling,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    return _save_random(ModernBertForSequenceClassification, config, tokenizer, out, seed)


def deberta_v2_cross_encoder(
    out: Path, tokenizer_dir: Path, *, num_labels: int = 1, max_length: int = 128, seed: int = 8
) -> Path:
    """DebertaV2ForSequenceClassification (ContextPooler: dense + GELU on [CLS], classifier) as
    DeBERTa-v3 configures it: log buckets, shared key projections, no token types."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    tokenizer = _wordpiece(tokenizer_dir, max_length)
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=16,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save_random(DebertaV2ForSequenceClassification, config, tokenizer, out, seed)


def export_onnx(model_dir: Path, out_dir: Path) -> Path:
    """`model_dir` as an ONNX graph with a `logits` output (torch.onnx), beside its configs."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.suffix in (".json", ".txt", ".model"):
            shutil.copy(item, out_dir / item.name)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones((2, 8), dtype=torch.long)
    # The TorchScript exporter (no onnxscript needed) warns that it is the legacy one, and its
    # tracer warns about Python branches on shapes; neither changes this graph's numbers.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _export(torch, Logits(), ids, out_dir / "model.onnx")
    return out_dir


def _export(torch, module, ids, path: Path) -> None:
    torch.onnx.export(
        module,
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def _save_random(model_class, config, tokenizer, out: Path, seed: int) -> Path:
    """A seeded random `model_class(config)`, its weights spread (`_spread`), saved with
    `tokenizer` (if any) into `out`."""
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    _spread(model)
    model.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def _spread(model) -> None:
    """Widen the random init (std 0.02 makes every score nearly equal) so rankings mean something."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embeddings" not in name:
                param.normal_(0.0, 0.3)
            elif name.endswith("bias"):
                param.normal_(0.0, 0.1)
