#include "embedserve/pooling.hpp"

#include <algorithm>
#include <cmath>
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

inline void accumulate(const float* row, std::size_t dim, double weight, double* sum) noexcept {
    for (std::size_t j = 0; j < dim; ++j) {
        sum[j] += weight * static_cast<double>(row[j]);
    }
}

inline void take_max(const float* row, std::size_t dim, float* best) noexcept {
    // A NaN wins, as in torch.max and NumPy's max: std::max(best, NaN) would keep best, so a
    // NaN would survive only when it sat in the first pooled token.
    for (std::size_t j = 0; j < dim; ++j) {
        const float value = row[j];
        best[j] = (value > best[j] || std::isnan(value)) ? value : best[j];
    }
}

inline bool sums(pool_mode mode) noexcept {
    return mode == pool_mode::mean || mode == pool_mode::mean_sqrt_len ||
           mode == pool_mode::weightedmean;
}

/// Pools one row over the tokens t in [begin, seq) whose mask is nonzero.
template <class T>
void pool_row(const T* h, const std::int64_t* m, std::size_t begin, std::size_t first,
              const pool_geometry& g, pool_mode mode, double* sum, float* scratch, float* o) {
    const std::size_t dim = g.dim;
    auto row = [&](std::size_t t) { return h + as_offset(t) * g.hidden_seq_stride; };
    // Returns a float32 view of token t: the row itself for float32, else converted into scratch.
    auto as_f32 = [&](std::size_t t) -> const float* {
        if constexpr (std::is_same_v<T, float>) {
            return row(t);
        } else {
            convert_row(row(t), dim, scratch);
            return scratch;
        }
    };

    if (mode == pool_mode::cls || mode == pool_mode::last) {
        std::size_t chosen = g.seq;  // g.seq means "none pooled"
        for (std::size_t t = begin; t < g.seq; ++t) {
            if (m[t] != 0) {
                chosen = t;
                if (mode == pool_mode::cls) {
                    break;
                }
            }
        }
        if (chosen == g.seq && mode == pool_mode::cls && g.seq > 0) {
            chosen = 0;  // sentence-transformers takes argmax of an all-zero mask: token 0
        }
        if (chosen == g.seq) {
            std::fill(o, o + dim, 0.0f);
        } else {
            convert_row(row(chosen), dim, o);
        }
        return;
    }

    if (mode == pool_mode::max) {
        bool any = false;
        for (std::size_t t = begin; t < g.seq; ++t) {
            if (m[t] == 0) {
                continue;
            }
            if (!any) {
                convert_row(row(t), dim, o);
                any = true;
            } else {
                take_max(as_f32(t), dim, o);
            }
        }
        if (!any) {
            std::fill(o, o + dim, 0.0f);
        }
        return;
    }

    // Double accumulator: a few hundred float32 adds would otherwise lose low bits.
    std::fill(sum, sum + dim, 0.0);
    double total_weight = 0.0;
    for (std::size_t t = begin; t < g.seq; ++t) {
        if (m[t] == 0) {
            continue;
        }
        if (mode == pool_mode::weightedmean) {
            const auto weight = static_cast<double>(t + 1 - first);
            total_weight += weight;
            accumulate(as_f32(t), dim, weight, sum);
        } else {
            total_weight += 1.0;
            accumulate(as_f32(t), dim, sum);
        }
    }
    // sentence-transformers divides by max(count, 1e-9): rows with nothing pooled stay zero.
    double denominator = std::max(total_weight, 1e-9);
    if (mode == pool_mode::mean_sqrt_len) {
        denominator = std::sqrt(denominator);
    }
    for (std::size_t j = 0; j < dim; ++j) {
        o[j] = static_cast<float>(sum[j] / denominator);
    }
}

template <class T>
void pool_impl(const T* hidden, const std::int64_t* mask, const std::int64_t* skip,
               const pool_geometry& g, pool_mode mode, float* out) {
    const std::size_t dim = g.dim;
    std::vector<double> sum(sums(mode) ? dim : 0);
    std::vector<float> scratch(std::is_same_v<T, float> ? 0 : dim);

    for (std::size_t b = 0; b < g.batch; ++b) {
        const T* h = hidden + as_offset(b) * g.hidden_batch_stride;
        const std::int64_t* m = mask + as_offset(b) * g.mask_batch_stride;
        // The first present token, and where pooling starts after skipping the prompt's tokens.
        std::size_t first = 0;
        while (first < g.seq && m[first] == 0) {
            ++first;
        }
        std::size_t begin = first;
        const std::int64_t to_skip = skip != nullptr ? skip[b] : 0;
        for (std::int64_t k = 0; k < to_skip && begin < g.seq; ++k) {
            ++begin;
            while (begin < g.seq && m[begin] == 0) {
                ++begin;
            }
        }
        if (first == g.seq) {
            first = 0;
        }
        pool_row(h, m, begin, first, g, mode, sum.data(), scratch.data(), out + b * dim);
    }
}

}  // namespace

void pool_f32(const float* hidden, const std::int64_t* mask, const std::int64_t* skip,
              const pool_geometry& geometry, pool_mode mode, float* out) {
    pool_impl(hidden, mask, skip, geometry, mode, out);
}

void pool_f16(const std::uint16_t* hidden, const std::int64_t* mask, const std::int64_t* skip,
              const pool_geometry& geometry, pool_mode mode, float* out) {
    pool_impl(hidden, mask, skip, geometry, mode, out);
}

}  // namespace embedserve
