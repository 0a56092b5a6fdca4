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
template <class V>
EMBEDSERVE_VECTOR void normal_cdf(typename V::F& v) {
    using F = typename V::F;
    const F zero = F{};
    const F z = v * 0.70710678118654752f;
    const F a = z < zero ? -z : z;
    const F t = 1.0f / (1.0f + 0.3275911f * a);
    F poly = F{} + 1.061405429f;
    poly = poly * t - 1.453152027f;
    poly = poly * t + 1.421413741f;
    poly = poly * t - 0.284496736f;
    poly = poly * t + 0.254829592f;
    F gauss = -(a * a);
    exp_nonpositive<V>(gauss);
    const F tail = 0.5f * (poly * t) * gauss;  // 0.5 * erfc(|z|)
    v = z < zero ? tail : 1.0f - tail;
}

template <class V>
EMBEDSERVE_VECTOR void bias_gelu_rows(const float* x, const float* bias, std::size_t rows,
                                      std::size_t cols, float* out) {
    using F = typename V::F;
    const std::size_t full = cols / V::lanes * V::lanes;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* o = out + r * cols;
        for (std::size_t c = 0; c < full; c += V::lanes) {
            const F v = at<V>(xr + c) + at<V>(bias + c);
            F phi = v;
            normal_cdf<V>(phi);
            at<V>(o + c) = v * phi;
        }
        for (std::size_t c = full; c < cols; ++c) {
            const float v = xr[c] + bias[c];
            o[c] = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        }
    }
}

template <class V>
EMBEDSERVE_VECTOR void layer_norm_rows(const float* x, const float* bias, const float* residual,
                                       const float* gamma, const float* beta, float epsilon,
                                       std::size_t rows, std::size_t cols, float* out) {
    using F = typename V::F;
    const std::size_t full = cols / V::lanes * V::lanes;
    const float n = static_cast<float>(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        const float* rr = residual + r * cols;
        float* o = out + r * cols;
        // The sum is written to the output row first, then normalized in place.
        F sum = {};
        float tail = 0.0f;
        for (std::size_t c = 0; c < full; c += V::lanes) {
            const F s = (at<V>(xr + c) + at<V>(bias + c)) + at<V>(rr + c);
            at<V>(o + c) = s;
            sum += s;
        }
        for (std::size_t c = full; c < cols; ++c) {
            o[c] = (xr[c] + bias[c]) + rr[c];
            tail += o[c];
        }
        const float mean = (lane_sum<V>(sum) + tail) / n;
        F squares = {};
        float tail_squares = 0.0f;
        for (std::size_t c = 0; c < full; c += V::lanes) {
            const F d = at<V>(o + c) - mean;
            squares += d * d;
        }
        for (std::size_t c = full; c < cols; ++c) {
            const float d = o[c] - mean;
            tail_squares += d * d;
        }
        const float inverse = 1.0f / std::sqrt((lane_sum<V>(squares) + tail_squares) / n + epsilon);
        for (std::size_t c = 0; c < full; c += V::lanes) {
            const F shift = beta ? at<V>(beta + c) : F{};
            at<V>(o + c) = (at<V>(o + c) - mean) * inverse * at<V>(gamma + c) + shift;
        }
        for (std::size_t c = full; c < cols; ++c) {
            o[c] = (o[c] - mean) * inverse * gamma[c] + (beta ? beta[c] : 0.0f);
        }
    }
}

EMBEDSERVE_KERNELS(bias_gelu, bias_gelu_rows,
                   (const float* x, const float* bias, std::size_t rows, std::size_t cols,
                    float* out),
                   (x, bias, rows, cols, out))

EMBEDSERVE_KERNELS(layer_norm, layer_norm_rows,
                   (const float* x, const float* bias, const float* residual, const float* gamma,
                    const float* beta, float epsilon, std::size_t rows, std::size_t cols,
                    float* out),
                   (x, bias, residual, gamma, beta, epsilon, rows, cols, out))

}  // namespace

void bias_gelu(const float* x, const float* bias, std::size_t rows, std::size_t cols,
               float* out) noexcept {
    EMBEDSERVE_DISPATCH(bias_gelu, (x, bias, rows, cols, out))
}

void bias_residual_layer_norm(const float* x, const float* bias, const float* residual,
                              const float* gamma, const float* beta, float epsilon,
                              std::size_t rows, std::size_t cols, float* out) noexcept {
    EMBEDSERVE_DISPATCH(layer_norm, (x, bias, residual, gamma, beta, epsilon, rows, cols, out))
}

}  // namespace embedserve
