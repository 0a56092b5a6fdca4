"""Texts or token arrays → the id sequences a model sees: prompts, special tokens, truncation.

Shared by every kind that reads single texts through a `ModelTokenizer` and a `ModelConfig`
(prompts, `include_prompt`): the embedding engine and the sparse encoder. `prompt_name_for` is
the one rule for which prompt a query or a document gets, for every kind and route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from embedserve.errors import InputError
from embedserve.inputs import Inputs, TextsOrTokens, classify_inputs
from embedserve.models import ModelConfig
from embedserve.models.config import ST_DEFAULT_PROMPTS
from embedserve.tokenization import ModelTokenizer

# What its encode_query / encode_document take when a call names no prompt: the first of these
# the model has. With the defaults above, "query" and "document" are always there, so a model's
# "passage" or "corpus" prompt is never taken, nor its default prompt.
_PROMPTS_FOR = {"query": ("query",), "document": ("document", "passage", "corpus")}


def model_prompts(prompts: Mapping[str, str]) -> dict[str, str]:
    """A model's prompts as sentence-transformers holds them: its saved ones over the defaults."""
    return {**ST_DEFAULT_PROMPTS, **prompts}


def prompt_name_for(
    input_type: str | None, prompts: Mapping[str, str], prompt_name: str | None = None
) -> str | None:
    """The prompt a text gets as `input_type`, as sentence-transformers' encode_query ("query")
    and encode_document ("document") choose it: `prompt_name` if named, else the first of its
    names in the model's `prompts` (with sentence-transformers' defaults). Anything else (None,
    Azure's "text") is a plain encode: None, so the model's default prompt, if any, applies."""
    if prompt_name is not None:
        return prompt_name
    names = _PROMPTS_FOR.get(input_type or "", ())
    return next((name for name in names if name in model_prompts(prompts)), None)


class TokenIds(np.ndarray):
    """An id sequence whose first `pool_skip` tokens (an instruction prompt) are not pooled, and
    which, with `keep_states`, gets its tokens' final hidden states back in `states`.

    An ndarray subclass so the server's batcher, which only moves sequences around, carries
    the count to `Engine.forward` and the states back to the request without knowing about them.
    """

    pool_skip: int = 0
    keep_states: bool = False
    states: np.ndarray | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.pool_skip = getattr(obj, "pool_skip", 0)
        self.keep_states = getattr(obj, "keep_states", False)
        self.states = None


@dataclass(frozen=True)
class Prepared:
    """Inputs as the model will see them: id sequences with special tokens, and their counts."""

    sequences: list[np.ndarray]
    untruncated_tokens: np.ndarray

    @property
    def token_counts(self) -> np.ndarray:
        return np.fromiter(
            (len(s) for s in self.sequences), dtype=np.int64, count=len(self.sequences)
        )

    def keeping_states(self) -> Prepared:
        """The same sequences, marked so `Engine.forward` hands back their token states."""
        marked = []
        for seq in self.sequences:
            ids = seq.view(TokenIds)
            ids.pool_skip = getattr(seq, "pool_skip", 0)
            ids.keep_states = True
            marked.append(ids)
        return Prepared(marked, self.untruncated_tokens)


class TextPreparer:
    """`prepare` for a model with `self.tokenizer` (ModelTokenizer) and `self.config`
    (ModelConfig: prompts, default prompt, include_prompt)."""

    tokenizer: ModelTokenizer
    config: ModelConfig

    def prepare(
        self,
        inputs: TextsOrTokens | Inputs,
        *,
        truncate: bool = True,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        param: str = "input",
        max_tokens: int | None = None,
        start: int = 0,
    ) -> Prepared:
        """Tokenize (or check token arrays), add special tokens and apply the length limit (the
        model's, or `max_tokens` when lower: `ModelTokenizer.model_sequence`).
        `param` is the inputs' name in an error about a token id (`inputs[1] holds ...`), and
        `start` the index of the first of them in their request, which errors number from.

        Trusts `truncation_direction`: the server's schema and `embed` check it at their boundary.
        """
        parsed = inputs if isinstance(inputs, Inputs) else classify_inputs(inputs)
        # Checked for token arrays too, which take no prompt: a misspelt name is no silent no-op.
        prompt = self._prompt(prompt_name)
        if parsed.texts is not None:
            texts = [prompt + text for text in parsed.texts] if prompt else parsed.texts
            content = self.tokenizer.content_ids(texts)
        else:
            prompt = None
            content = parsed.token_arrays or []
            self.tokenizer.check_token_ids(content, param=param, start=start)
        specials = self.tokenizer.specials
        untruncated = np.fromiter(
            (len(ids) + specials for ids in content), dtype=np.int64, count=len(content)
        )
        sequences = [
            self.tokenizer.model_sequence(
                i, ids, truncate=truncate, direction=truncation_direction, max_tokens=max_tokens
            )
            for i, ids in enumerate(content, start)
        ]
        if prompt and not self.config.include_prompt:
            sequences = self._mark_prompt(sequences, content, prompt, truncation_direction)
        return Prepared(sequences, untruncated)

    def _mark_prompt(
        self, sequences: list[np.ndarray], content: list[list[int]], prompt: str, direction: str
    ) -> list[np.ndarray]:
        """Sequences that know how many leading tokens sentence-transformers leaves out of pooling.

        Its count is the prompt tokenized alone with special tokens, less a trailing special
        token (so BERT's [CLS] counts, [SEP] does not); left truncation eats prompt tokens first.
        """
        prompt_content = len(self.tokenizer.content_ids([prompt])[0])
        tokenizer = self.tokenizer
        prompt_length = len(tokenizer.prefix) + prompt_content + max(len(tokenizer.suffix) - 1, 0)
        marked = []
        for seq, ids in zip(sequences, content):
            removed = len(ids) - (len(seq) - tokenizer.specials) if direction == "left" else 0
            ids_view = seq.view(TokenIds)
            ids_view.pool_skip = prompt_length - min(removed, prompt_content)
            marked.append(ids_view)
        return marked

    def prompted(self, texts: list[str], prompt_name: str | None) -> list[str]:
        """`texts` behind the prompt `prompt_name` names (or the model's default), if any; an
        InputError naming `prompt_name` if the model has no such prompt."""
        prompt = self._prompt(prompt_name)
        return [prompt + text for text in texts] if prompt else texts

    def _prompt(self, prompt_name: str | None) -> str | None:
        """The instruction prepended to texts: `prompt_name`'s (sentence-transformers' empty
        "query" and "document" included), else the model's default, if any."""
        name = prompt_name if prompt_name is not None else self.config.default_prompt_name
        if name is None:
            return None
        if not isinstance(name, str):
            # Before the lookup, where a list or dict was a bare "unhashable type" TypeError.
            raise InputError(
                f"prompt_name must be a string or None, got {name!r}", param="prompt_name"
            )
        prompts = model_prompts(self.config.prompts)
        if name not in prompts:
            known = ", ".join(sorted(prompts)) or "none"
            raise InputError(
                f"prompt_name {name!r} is not one of this model's prompts ({known})",
                param="prompt_name",
            )
        return prompts[name] or None
