#include "embedserve/normalize.hpp"

#include <algorithm>
#include <cmath>

namespace embedserve {

double l2_norm(const float* values, std::size_t count) noexcept {
    // Four independent partial sums break the add-latency chain (and let the compiler use
    // vector lanes) while staying deterministic: the grouping depends only on `count`.
    double partial[4] = {0.0, 0.0, 0.0, 0.0};
    std::size_t i = 0;
    for (; i + 4 <= count; i += 4) {
        for (std::size_t lane = 0; lane < 4; ++lane) {
            const double v = static_cast<double>(values[i + lane]);
            partial[lane] += v * v;
        }
    }
    for (; i < count; ++i) {
        const double v = static_cast<double>(values[i]);
        partial[0] += v * v;
    }
    return std::sqrt((partial[0] + partial[1]) + (partial[2] + partial[3]));
}

void cut_and_normalize(const float* x, std::size_t rows, std::size_t cols,
                       std::ptrdiff_t x_row_stride, bool normalize, float* out,
                       std::ptrdiff_t out_row_stride) noexcept {
    for (std::size_t r = 0; r < rows; ++r) {
        const std::ptrdiff_t row = static_cast<std::ptrdiff_t>(r);
        const float* src = x + row * x_row_stride;
        float* dst = out + row * out_row_stride;
        if (!normalize) {
            if (dst != src) {
                std::copy(src, src + cols, dst);
            }
            continue;
        }
        const double scale = 1.0 / std::max(l2_norm(src, cols), l2_norm_epsilon);
        // Element-wise read-then-write of the same index, so src == dst is fine.
        for (std::size_t j = 0; j < cols; ++j) {
            dst[j] = static_cast<float>(static_cast<double>(src[j]) * scale);
        }
    }
}

}  // namespace embedserve
