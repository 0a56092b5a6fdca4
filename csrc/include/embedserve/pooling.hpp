#pragma once
/// \file pooling.hpp
/// Token pooling: [batch, seq, dim] hidden states + [batch, seq] attention mask -> [batch, dim].

#include <cstddef>
#include <cstdint>

namespace embedserve {

/// How the token axis is reduced; the modes of sentence-transformers' Pooling module.
///
/// A token is *present* when its mask value is nonzero (any nonzero value weighs 1). The
/// *pooled* tokens are the present ones minus the first `skip[b]` of them (an instruction
/// prompt excluded from pooling, sentence-transformers' include_prompt=false); without a skip
/// array every present token is pooled. `first` is the index of the first present token (0
/// when none), so left padding does not change position weights.
enum class pool_mode {
    /// sum(h) / max(n, 1e-9) over the n pooled tokens, accumulated in double; zeros when n == 0.
    mean,
    /// The first pooled token; token 0 when none is pooled (sentence-transformers' argmax rule);
    /// zeros when seq == 0.
    cls,
    /// The pooled token with the highest index; zeros when none is pooled.
    last,
    /// Element-wise maximum over pooled tokens (NaN where any is NaN); zeros when none is pooled.
    max,
    /// sum(h) / sqrt(max(n, 1e-9)) over the n pooled tokens; zeros when n == 0.
    mean_sqrt_len,
    /// sum(w_t * h_t) / max(sum(w_t), 1e-9) with w_t = t + 1 - first; zeros when n == 0.
    weightedmean,
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
/// `skip` is null or `batch` counts (negative counts as 0) of leading present tokens to leave out.
/// Throws std::bad_alloc only (the summing modes allocate one dim-sized scratch row).
void pool_f32(const float* hidden, const std::int64_t* mask, const std::int64_t* skip,
              const pool_geometry& geometry, pool_mode mode, float* out);

/// Pools binary16 hidden states, given as their raw bits, converting each element exactly to
/// float32; otherwise identical to pool_f32.
void pool_f16(const std::uint16_t* hidden, const std::int64_t* mask, const std::int64_t* skip,
              const pool_geometry& geometry, pool_mode mode, float* out);

}  // namespace embedserve
