#include "embedserve/epilogues.hpp"

#include <cmath>
#include <cstring>

#include "embedserve/simd.hpp"

namespace embedserve {
namespace {

// vs[i] = Phi(vs[i]) = 0.5 * (1 + erf(z)), z = v / sqrt 2, for N vectors stepped together
// (kInterleave): erf by Abramowitz & Stegun 7.1.26, erfc(|z|) = t * poly(t) * exp(-z^2) with
// t = 1 / (1 + p|z|), reflected by sign; |erf error| <= 1.5e-7. (Least-squares polynomials for erf
// near 0 and erfc beyond, with no division, were slower: ~20 dependent FMAs a vector against one
// division here.)
template <class V, std::size_t N>
EMBEDSERVE_VECTOR void normal_cdf(typename V::F (&vs)[N]) {
    using F = typename V::F;
    const F zero = F{};
    F z[N], t[N], gauss[N], poly[N];
    for (std::size_t i = 0; i < N; ++i) {
        z[i] = vs[i] * 0.70710678118654752f;
        const F a = z[i] < zero ? -z[i] : z[i];
        t[i] = 1.0f / (1.0f + 0.3275911f * a);
        gauss[i] = -(a * a);
    }
    exp_nonpositive<V, N>(gauss);
    for (std::size_t i = 0; i < N; ++i) poly[i] = F{} + 1.061405429f;
    for (std::size_t i = 0; i < N; ++i) poly[i] = poly[i] * t[i] - 1.453152027f;
    for (std::size_t i = 0; i < N; ++i) poly[i] = poly[i] * t[i] + 1.421413741f;
    for (std::size_t i = 0; i < N; ++i) poly[i] = poly[i] * t[i] - 0.284496736f;
    for (std::size_t i = 0; i < N; ++i) poly[i] = poly[i] * t[i] + 0.254829592f;
    for (std::size_t i = 0; i < N; ++i) {
        const F tail = 0.5f * (poly[i] * t[i]) * gauss[i];  // 0.5 * erfc(|z|)
        vs[i] = z[i] < zero ? tail : 1.0f - tail;
    }
}

// out = gelu(v) = v * Phi(v), v = x + bias, for N vectors from each pointer.
template <class V, std::size_t N>
EMBEDSERVE_VECTOR void bias_gelu_vectors(const float* x, const float* bias, float* out) {
    using F = typename V::F;
    F v[N], phi[N];
    for (std::size_t i = 0; i < N; ++i) {
        v[i] = at<V>(x + i * V::lanes) + at<V>(bias + i * V::lanes);
        phi[i] = v[i];
    }
    normal_cdf<V, N>(phi);
    for (std::size_t i = 0; i < N; ++i) at<V>(out + i * V::lanes) = v[i] * phi[i];
}

template <class V>
EMBEDSERVE_VECTOR void bias_gelu_rows(const float* x, const float* bias, std::size_t rows,
                                      std::size_t cols, float* out) {
    const std::size_t full = cols / V::lanes * V::lanes;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* o = out + r * cols;
        std::size_t c = 0;
        for (; c + kInterleave * V::lanes <= full; c += kInterleave * V::lanes) {
            bias_gelu_vectors<V, kInterleave>(xr + c, bias + c, o + c);
        }
        for (; c < full; c += V::lanes) bias_gelu_vectors<V, 1>(xr + c, bias + c, o + c);
        for (; c < cols; ++c) {
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
