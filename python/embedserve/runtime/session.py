"""An ONNX Runtime session for an encoder: which inputs it takes, which output is the hidden state."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedserve.cpu import usable_cpus
from embedserve.models.graph import fused_onnx
from embedserve.runtime.custom_ops import attention_op
from embedserve.runtime.providers import CPU, resolve_providers

log = logging.getLogger(__name__)
KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class SessionOptions:
    providers: str | Sequence[str] | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    # How long an idle intra-op thread spins for more work before it sleeps, in microseconds:
    # None keeps ONNX Runtime's own (~25 ms after a run), 0 stops it as each run returns.
    idle_spin_us: int | None = None


class EncoderSession:
    """Runs the model on padded int64 batches and returns [batch, seq, hidden] states.

    `run` is safe to call from several threads at once (ONNX Runtime sessions are) and
    releases the GIL while the model runs.
    """

    pooled = False  # the graph returns hidden states; the C++ kernels pool them

    def __init__(self, path: Path, options: SessionOptions | None = None) -> None:
        options = options or SessionOptions()
        self.path = path
        self.options = options
        self._session = open_session(path, options)
        self.provider = self._session.get_providers()[0]
        self.input_names = checked_inputs([i.name for i in self._session.get_inputs()], path)
        self.output_name, self.hidden_size = hidden_state_output(self._session, path)

    @property
    def threads(self) -> int:
        """Its intra-op threads: the option's, else the CPUs it may use (ONNX Runtime's own
        default counts physical cores, one per pair of hyperthreads)."""
        return self.options.intra_op_threads or usable_cpus()

    @property
    def graph_bytes(self) -> int:
        """Bytes of its graph file and of the external data beside it (`<name>.data`, as the
        compiler writes it, or `<name>_data`, as exporters often do): about its weights."""
        files = [self.path, *(self.path.with_name(self.path.name + s) for s in (".data", "_data"))]
        return sum(f.stat().st_size for f in files if f.is_file())

    def with_threads(self, threads: int) -> EncoderSession:
        """The same graph on a session of its own with `threads` intra-op threads. Its weights
        are loaded once more (ONNX Runtime's Python API shares none between sessions)."""
        return EncoderSession(self.path, replace(self.options, intra_op_threads=threads))

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, token_type_ids)
        (hidden,) = self._session.run([self.output_name], feeds)
        return hidden


def checked_inputs(names: list[str], path: Path) -> list[str]:
    """A graph's input names, once each is known to be one the engine feeds (KNOWN_INPUTS)."""
    unknown = [n for n in names if n not in KNOWN_INPUTS]
    if unknown:
        raise ValueError(
            f"{path}: model inputs {unknown} are not understood (known: {KNOWN_INPUTS})"
        )
    return names


def graph_feeds(
    input_names: list[str],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    token_type_ids: np.ndarray,
) -> dict[str, np.ndarray]:
    """The arrays a graph takes, by its input names (many graphs have no token_type_ids)."""
    feeds = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }
    return {name: feeds[name] for name in input_names}


SLOWER_FUSION = "SkipLayerNormFusion"
LOG_LEVEL_VARIABLE = "EMBEDSERVE_ORT_LOG_LEVEL"
# ONNX Runtime's severities, 0 to 4; errors only by default.
LOG_LEVELS = ("verbose", "info", "warning", "error", "fatal")


def ort_log_level() -> int:
    """The severity from which ONNX Runtime logs (`EMBEDSERVE_ORT_LOG_LEVEL`, default 3: errors;
    warnings about unused initializers or provider fallbacks are noise to a user)."""
    text = os.environ.get(LOG_LEVEL_VARIABLE, "").strip() or "3"
    if text not in {str(i) for i in range(len(LOG_LEVELS))}:
        named = ", ".join(f"{i} ({name})" for i, name in enumerate(LOG_LEVELS))
        raise ValueError(f"{LOG_LEVEL_VARIABLE}={text!r}: expected one of {named}")
    return int(text)


def open_session(
    path: Path, options: SessionOptions, optimized_graph: Path | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime session for the graph at `path`; `optimized_graph`: where to write the
    graph ONNX Runtime runs after its own passes (to see which fusions fired)."""
    so = ort.SessionOptions()
    if optimized_graph is not None:
        so.optimized_model_filepath = str(optimized_graph)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    if options.inter_op_threads:
        so.inter_op_num_threads = options.inter_op_threads
    if options.idle_spin_us is not None:
        set_idle_spin(so, options.idle_spin_us)
    so.log_severity_level = ort_log_level()
    providers = resolve_providers(options.providers)
    disabled: list[str] = []
    if providers == [CPU]:
        # A fused attention kernel: a cached copy of the graph that uses it
        # (models/fused_attention.py); the CUDA path keeps the standard graph its passes expect.
        path = fused_onnx(path, attention_op(so))
        # ONNX Runtime's CPU SkipLayerNormalization is ~4x slower than the Add + LayerNorm it
        # replaces (bench/NOTES.md, wave 11); our epilogue pass takes the fp32 graphs' residual
        # norms, but in the int8 graphs ORT fused those after its MatMulIntegerToFloat (one
        # thread: 90.0 -> 95.6 texts/s with the fusion off, the fp32 graph unchanged).
        disabled = [SLOWER_FUSION]
    try:
        session = ort.InferenceSession(
            str(path), sess_options=so, providers=providers, disabled_optimizers=disabled
        )
    except Exception as exc:  # a broken CUDA install: carry on on the CPU, and say so once
        if providers == [CPU]:
            raise
        log.warning("could not start %s (%s); using the CPU", providers[0], exc)
        return ort.InferenceSession(str(path), sess_options=so, providers=[CPU])
    if providers[0] != CPU and session.get_providers()[0] == CPU:
        # ONNX Runtime falls back on its own where the provider's libraries do not load (no
        # cuDNN, another CUDA), logging only at its error level: say which provider ran.
        log.warning("could not start %s (ONNX Runtime's log says why); using the CPU", providers[0])
    return session


def set_idle_spin(so: ort.SessionOptions, microseconds: int) -> None:
    """Bound the spinning of a session's idle threads. The threads still spin between the ops of
    a run, whose waits are microseconds (turning spinning off altogether costs ~40 % on one
    text, bench/NOTES.md §7); what changes is the spin after a run, which keeps ~1.2 cores busy
    at 50 one-text requests a second (bench/NOTES.md, "CPU between requests")."""
    if microseconds == 0:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    else:  # ONNX Runtime 1.26 and later; earlier ones keep their own spin
        so.add_session_config_entry("session.intra_op.spin_duration_us", str(microseconds))


def hidden_state_output(session: ort.InferenceSession, path: Path) -> tuple[str, int | None]:
    """The [batch, seq, hidden] output, whatever the exporter called it."""
    outputs = session.get_outputs()
    for out in outputs:
        if out.name == "last_hidden_state" and len(out.shape) == 3:
            return out.name, _int_or_none(out.shape[2])
    for out in outputs:
        if len(out.shape) == 3:
            return out.name, _int_or_none(out.shape[2])
    shapes = {o.name: o.shape for o in outputs}
    raise ValueError(f"{path}: no [batch, sequence, hidden] output among {shapes}")


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None
