"""LLM rerankers against transformers on tiny random decoders with a decoder's tokenizer (no
special tokens added, all-MiniLM's WordPiece vocabulary, which holds "yes" and "no"):

- Qwen3-Reranker's way (`Qwen3ForCausalLM`, `Qwen2ForCausalLM`, tied and untied LM heads): the model
  card's prompt and truncation, score = softmax over the "no"/"yes" logits at the last position;
- causal models converted to `*ForSequenceClassification` (Qwen3, Qwen2; 1 and 3 labels): the
  `score` head on the last token, as transformers' own class computes it.

Real queries and license paragraphs of mixed lengths, several past the limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from embedserve.classification import Classifier
from embedserve.errors import InputError
from embedserve.models import onnx_for
from embedserve.models.kind import RERANKER, model_kind
from embedserve.prompt_pairs import DEFAULT_INSTRUCTION, PREFIX, SUFFIX
from embedserve.reranker import Reranker

from .support.cross_encoders import QUERIES
from .support.decoder_tokenizers import decoder_tokenizer
from .support.edge_texts import EDGE_QUERIES

MAX_LENGTH = 160
SCORE_ATOL = 1e-4


def decoder(
    out: Path,
    minilm_dir: Path,
    family: str,
    head: str,
    *,
    tied: bool,
    labels: int = 1,
    seed: int = 0,
) -> Path:
    import torch
    import transformers

    config_class = {"qwen3": transformers.Qwen3Config, "qwen2": transformers.Qwen2Config}[family]
    extra = {"head_dim": 8} if family == "qwen3" else {}
    config = config_class(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=tied,
        rms_norm_eps=1e-6,
        num_labels=labels,
        pad_token_id=0,
        **extra,
    )
    stem = "Qwen3" if family == "qwen3" else "Qwen2"
    model = getattr(transformers, f"{stem}For{head}")(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # a trained-looking scale: init's std 0.02 makes every score alike
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * 0.2
            p.copy_(1.0 + 0.5 * noise if "norm" in name else noise)
    model.save_pretrained(out)
    decoder_tokenizer(minilm_dir, out, max_length=MAX_LENGTH, append_eos=False)
    return out


@pytest.fixture(scope="module")
def documents(reference) -> list[str]:
    return list(dict.fromkeys(reference["texts"][3::6]))


def card_scores(folder: Path, pairs: list[tuple[str, str]], instruction: str | None = None):
    """Qwen3-Reranker's model card, line for line (format_instruction, process_inputs,
    compute_logits), with its max_length set to the tiny model's."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(SUFFIX, add_special_tokens=False)
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    out = []
    for start in range(0, len(texts), 8):
        inputs = tokenizer(
            texts[start : start + 8],
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=MAX_LENGTH - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        # The card also passes max_length here, which padding=True ignores (with a warning).
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt")
        with torch.no_grad():
            batch_scores = model(**inputs).logits[:, -1, :]
            true_vector = batch_scores[:, token_true_id]
            false_vector = batch_scores[:, token_false_id]
            batch_scores = torch.stack([false_vector, true_vector], dim=1)
            batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
            out.extend(batch_scores[:, 1].exp().tolist())
    return np.array(out)


@pytest.mark.parametrize(("family", "tied"), [("qwen3", True), ("qwen3", False)])
def test_yes_no_reranker_matches_the_model_card(tmp_path, minilm_dir, documents, family, tied):
    folder = decoder(tmp_path / family, minilm_dir, family, "CausalLM", tied=tied, seed=3)
    assert model_kind(folder) == RERANKER
    reranker = Reranker.from_pretrained(folder, max_batch_tokens=1024)
    assert reranker.model_info.max_tokens == MAX_LENGTH
    assert reranker.model_info.labels == ("no", "yes")
    for query in [*QUERIES, EDGE_QUERIES[1]]:
        pairs = [(query, doc) for doc in documents]
        want = card_scores(folder, pairs)
        got = reranker.score(pairs)[:, 1]
        np.testing.assert_allclose(got, want, atol=SCORE_ATOL, rtol=0)
        ranked = reranker.rank(query, documents)
        np.testing.assert_allclose([r.score for r in ranked], np.sort(want)[::-1], atol=SCORE_ATOL)
        assert [r.index for r in ranked][:5] == list(np.argsort(-want, kind="stable"))[:5]
    assert np.std(got) > 0.01
    # An instruction of the caller's changes every score, as it changes the prompt.
    pairs = [(QUERIES[1], doc) for doc in documents[:6]]
    custom = "Given a legal question, find the clause that answers it"
    np.testing.assert_allclose(
        reranker.score(pairs, instruction=custom)[:, 1],
        card_scores(folder, pairs, custom),
        atol=SCORE_ATOL,
    )
    # An empty instruction is the caller's (the card defaults only a missing one), per call and
    # as the model's own.
    empty = card_scores(folder, pairs, "")
    assert not np.allclose(empty, card_scores(folder, pairs), atol=1e-3)
    np.testing.assert_allclose(
        reranker.score(pairs, instruction="")[:, 1], empty, atol=SCORE_ATOL, rtol=0
    )
    blank = Reranker.from_pretrained(folder, rerank_instruction="")
    np.testing.assert_allclose(blank.score(pairs)[:, 1], empty, atol=SCORE_ATOL, rtol=0)


def test_the_classifier_refuses_single_texts_on_a_yes_no_reranker(tmp_path, minilm_dir):
    """An LLM reranker judges (query, document) pairs; a bare text has no prompt to answer."""
    folder = decoder(tmp_path / "qwen3", minilm_dir, "qwen3", "CausalLM", tied=True, seed=3)
    classifier = Classifier.from_pretrained(folder)
    assert [x.label for x in classifier.predict([(QUERIES[0], "a document")])[0]] != []
    for inputs in (["a text"], [(QUERIES[0], "a document"), "a text"]):
        with pytest.raises(InputError, match="LLM reranker.*not single texts"):
            classifier.predict(inputs)
    with pytest.raises(InputError, match="LLM reranker"):
        classifier.prepare_texts(["a text"])


def test_only_two_rows_of_the_lm_head_enter_the_graph(tmp_path, minilm_dir):
    folder = decoder(tmp_path / "q3", minilm_dir, "qwen3", "CausalLM", tied=False, seed=4)
    graph = onnx.load(str(onnx_for(folder)))
    (output,) = graph.graph.output
    dims = [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim]
    assert dims == ["batch", 2]
    sizes = {tuple(t.dims) for t in graph.graph.initializer}
    assert (32, 2) in sizes
    assert not any(30522 in s for s in sizes if len(s) == 2 and s != (30522, 32))  # no [*, vocab]


@pytest.mark.parametrize(("family", "labels"), [("qwen3", 1), ("qwen2", 3)])
def test_causal_sequence_classifier_matches_transformers(
    tmp_path, minilm_dir, documents, family, labels
):
    import torch
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    torch.set_num_threads(1)
    folder = decoder(
        tmp_path / family,
        minilm_dir,
        family,
        "SequenceClassification",
        tied=False,
        labels=labels,
        seed=5,
    )
    reranker = Reranker.from_pretrained(folder)
    # The file as saved: for a qwen2 config, AutoTokenizer would build Qwen2's BPE around this
    # WordPiece vocabulary (transformers 5 builds the class's own pipeline).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]", padding_side="left"
    )
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    pairs = [(QUERIES[i % 3], doc) for i, doc in enumerate(documents)]
    want = []
    for start in range(0, len(pairs), 8):
        chunk = pairs[start : start + 8]
        features = tokenizer(
            [q for q, _ in chunk],
            [d for _, d in chunk],
            padding=True,
            truncation="longest_first",
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        with torch.no_grad():
            want.append(model(**features).logits.numpy())
    logits = np.concatenate(want)
    got = reranker.score(pairs, raw_scores=True)
    np.testing.assert_allclose(got.reshape(logits.shape), logits, atol=SCORE_ATOL * 10, rtol=1e-4)
    assert np.std(logits) > 0.01
