#include "embedserve/epilogues.hpp"

#include <cmath>
#include <cstring>

#include "embedserve/simd.hpp"

namespace embedserve {
namespace {

// Phi(v) = 0.5 * (1 + erf(z)), z = v / sqrt 2, for 16 values: erf by Abramowitz & Stegun
// 7.1.26, erfc(|z|) = t * poly(t) * exp(-z^2) with t = 1 / (1 + p|z|), reflected by sign;
// |erf error| <= 1.5e-7. (Least-squares polynomials for erf near 0 and erfc beyond, with no
// division, were slower: ~20 dependent FMAs a vector against one division here.)
EMBEDSERVE_VECTOR void normal_cdf(f16& v) {
    const f16 zero = f16{};
    const f16 z = v * 0.70710678118654752f;
    const f16 a = z < zero ? -z : z;
    const f16 t = 1.0f / (1.0f + 0.3275911f * a);
    f16 poly = f16{} + 1.061405429f;
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    f16 gauss = -(a * a);
    exp_nonpositive(gauss);
    const f16 tail = 0.5f * (poly * t) * gauss;  // 0.5 * erfc(|z|)
    v = z < zero ? tail : 1.0f - tail;
}

EMBEDSERVE_SIMD_CLONES void bias_gelu_rows(const float* x, const float* bias, std::size_t rows,
                                           std::size_t cols, float* out) {
    const std::size_t full = cols / kLanes * kLanes;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* o = out + r * cols;
        for (std::size_t c = 0; c < full; c += kLanes) {
            const f16 v = at(xr + c) + at(bias + c);
            f16 phi = v;
            normal_cdf(phi);
            at(o + c) = v * phi;
        }
        for (std::size_t c = full; c < cols; ++c) {
            const float v = xr[c] + bias[c];
            o[c] = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        }
    }
}

EMBEDSERVE_SIMD_CLONES void layer_norm_rows(const float* x, const float* bias,
                                            const float* residual, const float* gamma,
                                            const float* beta, float epsilon, std::size_t rows,
                                            std::size_t cols, float* out) {
    const std::size_t full = cols / kLanes * kLanes;
    const float n = static_cast<float>(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        const float* rr = residual + r * cols;
        float* o = out + r * cols;
        // The sum is written to the output row first, then normalized in place.
        f16 sum = {};
        float tail = 0.0f;
        for (std::size_t c = 0; c < full; c += kLanes) {
            const f16 s = (at(xr + c) + at(bias + c)) + at(rr + c);
            at(o + c) = s;
            sum += s;
        }
        for (std::size_t c = full; c < cols; ++c) {
            o[c] = (xr[c] + bias[c]) + rr[c];
            tail += o[c];
        }
        const float mean = (lane_sum(sum) + tail) / n;
        f16 squares = {};
        float tail_squares = 0.0f;
        for (std::size_t c = 0; c < full; c += kLanes) {
            const f16 d = at(o + c) - mean;
            squares += d * d;
        }
        for (std::size_t c = full; c < cols; ++c) {
            const float d = o[c] - mean;
            tail_squares += d * d;
        }
        const float inverse = 1.0f / std::sqrt((lane_sum(squares) + tail_squares) / n + epsilon);
        for (std::size_t c = 0; c < full; c += kLanes) {
            const f16 shift = beta ? at(beta + c) : f16{};
            at(o + c) = (at(o + c) - mean) * inverse * at(gamma + c) + shift;
        }
        for (std::size_t c = full; c < cols; ++c) {
            o[c] = (o[c] - mean) * inverse * gamma[c] + (beta ? beta[c] : 0.0f);
        }
    }
}

}  // namespace

void bias_gelu(const float* x, const float* bias, std::size_t rows, std::size_t cols,
               float* out) noexcept {
    bias_gelu_rows(x, bias, rows, cols, out);
}

void bias_residual_layer_norm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, float epsilon,
                              std::size_t rows, std::size_t cols, float* out) noexcept {
    layer_norm_rows(x, bias, residual, gamma, beta, epsilon, rows, cols, out);
}

}  // namespace embedserve
