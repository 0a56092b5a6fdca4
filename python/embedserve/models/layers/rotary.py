"""Rotary position embeddings (RoPE), as transformers' default, linear and llama3 forms and the
fixed NTK scaling of Alibaba's GTE ("ntk"), over all of each head or its first
``partial_rotary_factor`` share, in halves (GPT-NeoX) or in interleaved pairs (GPT-J)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedserve.models.hf_config import UnsupportedArchitectureError
from embedserve.models.layers.builder import GraphBuilder
from embedserve.models.layers.embeddings import first_rows

ROPE_TYPES = ("default", "linear", "llama3", "ntk")


class Rotary:
    """cos/sin tables for positions 0..max_positions-1, sliced to the batch's length once.

    Tables are constants rather than Cos/Sin of a Range in the graph: values in [-1, 1] survive
    a graph-level fp16 conversion, angles of thousands of radians would not. transformers
    numbers positions 0..sequence-1 whatever the padding (encoders and, without a KV cache,
    decoders alike), so one table slice serves every row.
    """

    def __init__(
        self,
        g: GraphBuilder,
        name: str,
        head_dim: int,
        max_positions: int,
        params: dict[str, Any],
        source: object = "config.json",
        *,
        interleaved: bool = False,
    ) -> None:
        kind = params.get("rope_type", "default")
        if kind not in ROPE_TYPES:
            raise UnsupportedArchitectureError(
                f"{source}: rope_type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
            )
        if "rope_theta" not in params:
            raise ValueError(f"{source} gives no rope_theta (nor rope_parameters.rope_theta)")
        dim = int(head_dim * float(params.get("partial_rotary_factor", 1.0)))
        if dim <= 0 or dim % 2 or dim > head_dim:
            raise UnsupportedArchitectureError(
                f"{source}: partial_rotary_factor {params.get('partial_rotary_factor', 1.0)} rotates "
                f"{dim} of {head_dim} dims per head; it must rotate an even number above 0"
            )
        base = float(params["rope_theta"])
        mixed_b = params.get("mixed_b")
        if kind == "ntk" and mixed_b is None:
            base *= float(params["factor"])
        # transformers: 1 / base ** (arange(0, dim, 2) / dim) in float32.
        exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        inv_freq = (1.0 / (np.float32(base) ** exponents)).astype(np.float32)
        if kind == "linear":
            inv_freq = (inv_freq / np.float32(params["factor"])).astype(np.float32)
        elif kind == "llama3":
            inv_freq = _llama3(inv_freq, params)
        elif kind == "ntk":
            inv_freq = _ntk(inv_freq, float(params["factor"]), dim, mixed_b)
        angles = np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]
        # Each frequency serves a pair: dims i and i + dim/2, or (interleaved) 2i and 2i + 1.
        if interleaved:
            angles = np.repeat(angles, 2, axis=-1)
        else:
            angles = np.concatenate([angles, angles], axis=-1)
        cos = g.weight(name + ".cos", np.cos(angles).astype(np.float32))
        sin = g.weight(name + ".sin", np.sin(angles).astype(np.float32))
        self.head_dim = head_dim
        self.dim = dim
        self.interleaved = interleaved
        self.cos = first_rows(g, cos, name + "/cos")  # [sequence, head_dim]
        self.sin = first_rows(g, sin, name + "/sin")

    def apply(self, g: GraphBuilder, x: str, name: str) -> str:
        """``x * cos + rotate(x) * sin`` for x [batch, heads, sequence, head_dim], over the
        first ``dim`` dims of each head; the rest pass unchanged."""
        rest = self.head_dim - self.dim
        if rest:
            x, passed = g.ops(
                "Split",
                [x, g.const([self.dim, rest], np.int64)],
                name + "/part",
                outputs=2,
                axis=-1,
            )
        rotated = self._rotate(g, x, name)
        out = g.op(
            "Add",
            [
                g.op("Mul", [x, self.cos], name + "/mul_cos"),
                g.op("Mul", [rotated, self.sin], name + "/mul_sin"),
            ],
            name + "/rotated" if rest else name,
        )
        return g.op("Concat", [out, passed], name, axis=-1) if rest else out

    def _rotate(self, g: GraphBuilder, x: str, name: str) -> str:
        """rotate_half: (a, b) -> (-b, a) for the two halves, or for each adjacent pair."""
        if self.interleaved:
            pairs = g.op("Reshape", [x, g.const([0, 0, 0, -1, 2], np.int64)], name + "/pairs")
            first, second = g.ops(
                "Split", [pairs, g.const([1, 1], np.int64)], name + "/split", outputs=2, axis=-1
            )
            swapped = g.op(
                "Concat", [g.op("Neg", [second], name + "/neg"), first], name + "/swap", axis=-1
            )
            return g.op(
                "Reshape", [swapped, g.const([0, 0, 0, -1], np.int64)], name + "/rotate_pairs"
            )
        half = self.dim // 2
        first, second = g.ops(
            "Split", [x, g.const([half, half], np.int64)], name + "/split", outputs=2, axis=-1
        )
        return g.op(
            "Concat",
            [g.op("Neg", [second], name + "/neg"), first],
            name + "/rotate_half",
            axis=-1,
        )


def _ntk(inv_freq: np.ndarray, factor: float, dim: int, mixed_b: float | None) -> np.ndarray:
    """GTE's NTKScalingRotaryEmbedding (https://kexue.fm/archives/9706), which its tables
    always use (they are built for max_position_embeddings * factor): base * factor and
    frequencies / factor ** (2 / dim), or with ``mixed_b`` each frequency i divided by
    exp(log(factor) / (dim / 2) ** b * i ** b)."""
    if mixed_b is None:
        return (inv_freq / np.float32(factor ** (2 / dim))).astype(np.float32)
    a = np.float32(np.log(np.float32(factor)) / (dim / 2) ** mixed_b)
    ranks = np.arange(1, dim // 2 + 1, dtype=np.float32)
    return (inv_freq / np.exp(a * ranks ** np.float32(mixed_b))).astype(np.float32)


def _llama3(inv_freq: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Llama 3.1's frequency-dependent scaling (transformers' _compute_llama3_parameters, in
    float32 as torch computes it): long wavelengths divided by ``factor``, short ones kept,
    the band between blended smoothly."""
    f32 = np.float32
    factor, low, high = (f32(params[k]) for k in ("factor", "low_freq_factor", "high_freq_factor"))
    old_context = f32(params["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = (f32(2 * np.pi) / inv_freq).astype(f32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq).astype(f32)
    smooth = ((old_context / wavelen - low) / (high - low)).astype(f32)
    smoothed = ((1 - smooth) * scaled / factor + smooth * scaled).astype(f32)
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(f32)


def rotary(
    g: GraphBuilder,
    head_dim: int,
    max_positions: int,
    params: dict[str, Any],
    source: object = "config.json",
    *,
    interleaved: bool = False,
) -> Rotary:
    """The Rotary for these settings, shared by every layer that uses the same ones."""
    key = f"rotary/{head_dim}/{max_positions}/{sorted(params.items())}"
    if interleaved:
        key += "/interleaved"
    if key not in g.shared:
        name = f"rotary{sum(k.startswith('rotary/') for k in g.shared)}"
        g.shared[key] = Rotary(
            g, name, head_dim, max_positions, params, source, interleaved=interleaved
        )
    return g.shared[key]
