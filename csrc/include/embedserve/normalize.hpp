#pragma once
/// \file normalize.hpp
/// Matryoshka cut followed by optional L2 normalisation, in that order.

#include <cstddef>

namespace embedserve {

/// Rows whose L2 norm is below this are divided by it instead, so a zero row stays zero.
constexpr double l2_norm_epsilon = 1e-12;

/// L2 norm of `count` floats, accumulated in double.
double l2_norm(const float* values, std::size_t count) noexcept;

/// For each of `rows` rows, copies the first `cols` floats of `x` into `out` and, when
/// `normalize` is set, divides them by max(L2 norm of those `cols` floats, l2_norm_epsilon).
/// Row r starts at x + r * x_row_stride and out + r * out_row_stride (strides in elements).
/// `out` may alias `x` with equal strides (in-place); any columns past `cols` are not touched.
void cut_and_normalize(const float* x, std::size_t rows, std::size_t cols,
                       std::ptrdiff_t x_row_stride, bool normalize, float* out,
                       std::ptrdiff_t out_row_stride) noexcept;

}  // namespace embedserve
