#pragma once
/// \file pooling.hpp
/// Token pooling: [batch, seq, dim] hidden states + [batch, seq] attention mask -> [batch, dim].

#include <cstddef>
#include <cstdint>

namespace embedserve {

/// How the token axis is reduced. A token counts as present when its mask value is nonzero
/// (any nonzero value weighs 1; for 0/1 masks this is exactly sentence-transformers' rule).
enum class pool_mode {
    /// Mean over present tokens, sum(h * m) / max(sum(m), 1e-9) accumulated in double;
    /// a row with no present token gives zeros.
    mean,
    /// Token 0 whatever its mask (sentence-transformers' CLS pooling); zeros when seq == 0.
    cls,
    /// The present token with the highest index; zeros when no token is present.
    last,
};

/// Sizes and element strides of one pooling call. The dim axis of `hidden` and the seq axis of
/// `mask` are unit-stride; the other strides count elements, not bytes.
struct pool_geometry {
    /// Number of sequences (rows of the output).
    std::size_t batch;
    /// Tokens per sequence; 0 is allowed and treated as "no token present".
    std::size_t seq;
    /// Hidden size (columns of the output).
    std::size_t dim;
    /// Elements from hidden[b, t, 0] to hidden[b + 1, t, 0].
    std::ptrdiff_t hidden_batch_stride;
    /// Elements from hidden[b, t, 0] to hidden[b, t + 1, 0].
    std::ptrdiff_t hidden_seq_stride;
    /// Elements from mask[b, 0] to mask[b + 1, 0].
    std::ptrdiff_t mask_batch_stride;
};

/// Pools float32 hidden states into `out`, a caller-owned row-major [batch, dim] float32 buffer.
/// Throws std::bad_alloc only (mean pooling allocates one dim-sized scratch row).
void pool_f32(const float* hidden, const std::int64_t* mask, const pool_geometry& geometry,
              pool_mode mode, float* out);

/// Pools binary16 hidden states, given as their raw bits, converting each element exactly to
/// float32; otherwise identical to pool_f32.
void pool_f16(const std::uint16_t* hidden, const std::int64_t* mask,
              const pool_geometry& geometry, pool_mode mode, float* out);

}  // namespace embedserve
