#include "embedserve/pooling.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "embedserve/half.hpp"

namespace embedserve {
namespace {

inline float to_float(float value) noexcept { return value; }
inline float to_float(std::uint16_t half) noexcept { return half_to_float(half); }

inline std::ptrdiff_t as_offset(std::size_t index) noexcept {
    return static_cast<std::ptrdiff_t>(index);
}

template <class T>
void convert_row(const T* row, std::size_t dim, float* out) noexcept {
    for (std::size_t j = 0; j < dim; ++j) {
        out[j] = to_float(row[j]);
    }
}

inline void accumulate(const float* row, std::size_t dim, double* sum) noexcept {
    for (std::size_t j = 0; j < dim; ++j) {
        sum[j] += static_cast<double>(row[j]);
    }
}

template <class T>
void pool_impl(const T* hidden, const std::int64_t* mask, const pool_geometry& g,
               pool_mode mode, float* out) {
    const std::size_t dim = g.dim;
    // Double accumulator: a few hundred float32 adds would otherwise lose low bits.
    std::vector<double> sum(mode == pool_mode::mean ? dim : 0);
    std::vector<float> converted(mode == pool_mode::mean && !std::is_same_v<T, float> ? dim : 0);

    for (std::size_t b = 0; b < g.batch; ++b) {
        const T* h = hidden + as_offset(b) * g.hidden_batch_stride;
        const std::int64_t* m = mask + as_offset(b) * g.mask_batch_stride;
        float* o = out + b * dim;

        switch (mode) {
            case pool_mode::cls:
                if (g.seq == 0) {
                    std::fill(o, o + dim, 0.0f);
                } else {
                    convert_row(h, dim, o);
                }
                break;

            case pool_mode::last: {
                std::size_t t = g.seq;
                while (t > 0 && m[t - 1] == 0) {
                    --t;
                }
                if (t == 0) {
                    std::fill(o, o + dim, 0.0f);
                } else {
                    convert_row(h + as_offset(t - 1) * g.hidden_seq_stride, dim, o);
                }
                break;
            }

            case pool_mode::mean: {
                std::fill(sum.begin(), sum.end(), 0.0);
                double* s = sum.data();
                std::size_t count = 0;
                for (std::size_t t = 0; t < g.seq; ++t) {
                    if (m[t] == 0) {
                        continue;
                    }
                    ++count;
                    const T* row = h + as_offset(t) * g.hidden_seq_stride;
                    if constexpr (std::is_same_v<T, float>) {
                        accumulate(row, dim, s);
                    } else {
                        // Convert, then add: measured faster than one fused half -> double loop.
                        convert_row(row, dim, converted.data());
                        accumulate(converted.data(), dim, s);
                    }
                }
                // sentence-transformers divides by max(count, 1e-9): zero rows stay zero.
                const double denominator = std::max(static_cast<double>(count), 1e-9);
                for (std::size_t j = 0; j < dim; ++j) {
                    o[j] = static_cast<float>(s[j] / denominator);
                }
                break;
            }
        }
    }
}

}  // namespace

void pool_f32(const float* hidden, const std::int64_t* mask, const pool_geometry& geometry,
              pool_mode mode, float* out) {
    pool_impl(hidden, mask, geometry, mode, out);
}

void pool_f16(const std::uint16_t* hidden, const std::int64_t* mask,
              const pool_geometry& geometry, pool_mode mode, float* out) {
    pool_impl(hidden, mask, geometry, mode, out);
}

}  // namespace embedserve
