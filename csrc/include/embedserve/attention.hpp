#pragma once

#include <cstddef>
#include <cstdint>

namespace embedserve {

/// One layer's attention over a right-padded batch, in the layout an encoder's projections
/// write: q, k and v are [batch, seq, heads * head_dim] rows (`row_stride` floats apart), the
/// output the same. Keys past a sequence's length are skipped rather than masked, so a padded
/// batch's scores cost what its real keys cost.
struct AttentionShape {
    std::size_t batch = 0;
    std::size_t seq = 0;
    std::size_t heads = 0;
    std::size_t head_dim = 0;
    float scale = 0.0f;  ///< multiplies q·k (1/sqrt(head_dim) for a standard encoder)
};

/// Inputs of one call. `q_bias` and `v_bias` ([heads * head_dim] each) may be null; k's bias
/// is not taken: it adds q·b_k to every score of a query alike, which softmax cancels.
/// `mask` is [batch, seq] (nonzero = a real token); a key that is zero inside a sequence's
/// span gets -10000 like ONNX Runtime's MultiHeadAttention. `position_bias`, when not null,
/// is [bias_batch, heads, seq, seq] added to the scaled scores (bias_batch 1 or batch).
struct AttentionInputs {
    const float* q = nullptr;
    const float* k = nullptr;
    const float* v = nullptr;
    const float* q_bias = nullptr;
    const float* v_bias = nullptr;
    const std::int32_t* mask = nullptr;
    const float* position_bias = nullptr;
    std::size_t position_bias_batch = 0;
};

/// The keys of sequence `b` that attention reads: one past its last real token (the whole
/// sequence when it has none, as ONNX Runtime does: every key then gets the same -10000).
std::size_t attended_keys(const std::int32_t* mask, std::size_t seq, std::size_t b) noexcept;

/// Attention for one (sequence, head) pair, `unit` = b * heads + h, written into `out`
/// ([batch, seq, heads * head_dim]). Units are independent: callers may run them on any
/// threads, each writing its own slice of `out`.
void attention_unit(const AttentionShape& shape, const AttentionInputs& in, std::size_t unit,
                    float* out);

}  // namespace embedserve
