"""embedserve's compiled kernels (C++17 core, pybind11 bindings).

Pooling, Matryoshka cut + L2 normalisation, the base64 / JSON encodings of embedding rows, and
int8/uint8 scalar quantization and packed sign bits.
Every kernel checks ndim and dtype first (ValueError whose message states the shape received
and the shape wanted) and releases the GIL while it loops, so threads can run them in parallel.
"""

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

_PoolMode: TypeAlias = Literal["mean", "cls", "last", "max", "mean_sqrt_len", "weightedmean"]

def pool(
    hidden: npt.ArrayLike,
    attention_mask: npt.ArrayLike,
    mode: _PoolMode,
    skip: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """Pool [batch, seq, dim] hidden states into a new float32 [batch, dim] array.

    hidden: float32 or float16 (float16 is read as-is and each element converted exactly in
    C++; float64 is cast to float32). Any layout works; non-contiguous input is copied.
    attention_mask: [batch, seq] integer or bool; a token is present when its mask is nonzero.
    skip: None or integer [batch]: how many leading present tokens of each row to leave out
    (an instruction prompt, sentence-transformers' include_prompt=False). The pooled tokens
    are the present tokens after the skipped ones.

    Modes are sentence-transformers' Pooling modes (sums accumulated in double):
    "mean" sum / max(n, 1e-9); "mean_sqrt_len" sum / sqrt(max(n, 1e-9)); "weightedmean"
    weights t + 1 - first, first being the row's first present token (left padding does not
    shift them; a skipped prompt keeps the remaining weights); "max" element-wise maximum
    (NaN where any pooled token has NaN, as torch.max); "cls" the first pooled token; "last" the pooled token with the highest index (left or
    right padding alike).

    A row with nothing pooled gives zeros, except "cls", which gives token 0 as
    sentence-transformers does. seq == 0 gives zeros for every mode; batch == 0 gives (0, dim).

    Raises ValueError for hidden that is not 3-D or not floating, a mask whose shape is not
    hidden.shape[:2] or whose dtype is not integer/bool, a skip that is not integer [batch],
    or an unknown mode.
    """

def cut_and_normalize(
    x: npt.ArrayLike,
    dimensions: int | None = None,
    normalize: bool = True,
) -> npt.NDArray[np.float32]:
    """Return a new float32 [n, dimensions] array: x[:, :dimensions], optionally L2-normalised.

    The Matryoshka cut comes first; then, if normalize, each cut row is divided by
    max(its L2 norm, 1e-12), the norm accumulated in double, so an all-zero row stays zero.
    dimensions=None keeps all d columns; otherwise an integer (int or NumPy integer) between 1
    and d (ValueError; a bool, float or str is a TypeError).
    x must be 2-D floating (float16/float64 are cast to float32). n == 0 is fine.
    """

def cut_and_normalize_(
    x: npt.NDArray[np.float32],
    dimensions: int | None = None,
    normalize: bool = True,
) -> npt.NDArray[np.float32]:
    """In-place cut_and_normalize; returns the view x[:, :dimensions].

    x must be a writable, C-contiguous, aligned, native-order float32 2-D numpy array, else
    ValueError
    (use cut_and_normalize for a converted copy). The result is written into x[:, :dimensions];
    columns past dimensions are left untouched.
    """

def encode_base64(x: npt.ArrayLike) -> list[str]:
    """Encode each row of a 2-D float32 array as base64 of its little-endian float32 bytes.

    Equal to [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in x]: standard
    alphabet, '=' padding, byte-swapped on big-endian hosts. float16/float64 are cast first.
    Non-finite values are encoded like any other bits.
    """

def encode_json(x: npt.ArrayLike) -> list[str]:
    """Encode each row of a 2-D float32 array as JSON array text "[a,b,...]" (no spaces).

    Each number is the shortest decimal that reads back as the same float32 (std::to_chars),
    so np.float32(float(token)) recovers the original exactly; integral values get ".0"
    ("1.0", "-0.0"), exponents look like "1e-05". float16/float64 are cast to float32 first.

    Raises ValueError naming the row and column of the first nan/inf (not valid JSON).
    """

def quantize(
    x: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike, signed: bool = True
) -> npt.NDArray[np.int8] | npt.NDArray[np.uint8]:
    """Quantize each value of a 2-D float array to one byte, per column ranges [lo, hi].

    Bit for bit sentence-transformers' quantize_embeddings(x, "int8" or "uint8", ranges=[lo, hi]):
    in float32, step = (hi[j] - lo[j]) / 255 (1 where that is 0), q = clamp(floor((x - lo[j]) /
    step), 0, 255) (0 where x is NaN). Returns int8 q - 128 when signed, else uint8 q, shape
    [n, d]. lo, hi: 1-D of length d.
    """

def pack_bits(
    x: npt.ArrayLike, signed: bool = True
) -> npt.NDArray[np.int8] | npt.NDArray[np.uint8]:
    """Pack the sign bits (x > 0) of each row 8 per byte, first column in the top bit.

    Equal to numpy.packbits(x > 0, axis=1): uint8 [n, ceil(d / 8)] when not signed (Cohere's
    "ubinary"), that minus 128 as int8 when signed ("binary").
    """
