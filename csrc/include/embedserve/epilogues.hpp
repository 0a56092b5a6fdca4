#pragma once

#include <cstddef>

namespace embedserve {

/// GELU of x + bias, the exact (erf) form transformers' "gelu" computes, over `rows` rows of
/// `cols` floats; bias has `cols`. erf is Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7).
void bias_gelu(const float* x, const float* bias, std::size_t rows, std::size_t cols,
               float* out) noexcept;

/// LayerNorm over each row of (x + bias) + residual, with gamma and beta (beta may be null):
/// a post-norm encoder's output projection, residual and norm in one pass over the row.
void bias_residual_layer_norm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, float epsilon,
                              std::size_t rows, std::size_t cols, float* out) noexcept;

}  // namespace embedserve
