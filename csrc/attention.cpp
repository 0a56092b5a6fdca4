#include "embedserve/attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include <pthread.h>

#include "embedserve/simd.hpp"

namespace embedserve {
namespace {

constexpr std::size_t kRows = 4;  // queries computed together: each key row is read once per block
constexpr float kMaskedKey = -10000.0f;  // ONNX Runtime's mask_filter_value
constexpr float kPastSpan = -1.0e30f;    // padding of the last score block: exp gives 0

std::size_t round_up(std::size_t n, std::size_t step) { return (n + step - 1) / step * step; }

// Each thread's working memory, one block it keeps between calls (grown when a call needs
// more, freed when the thread exits). A pthread key rather than a C++ thread_local object:
// clang (which builds the wheel) left such an object's constructor and destructor unemitted
// when only multiversioned code used it, and the library would not load.
// The key's destructor is code of this library, which a thread runs when it exits, whenever
// that is: the reason CMakeLists.txt links _ortops never to be unloaded (`-z nodelete`).
struct Scratch {  // trivial: nothing for clang to leave unemitted
    float* data;
    std::size_t size;
};

void free_scratch(void* scratch) {
    auto* s = static_cast<Scratch*>(scratch);
    std::free(s->data);
    delete s;
}

pthread_key_t scratch_key() {
    static pthread_key_t key;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, [] { pthread_key_create(&key, free_scratch); });
    return key;
}

// `floats` floats of this thread's scratch, or null when memory ran out. Kept out of the
// multiversioned kernels.
__attribute__((noinline)) float* scratch(std::size_t floats) {
    auto* s = static_cast<Scratch*>(pthread_getspecific(scratch_key()));
    if (s == nullptr) {
        s = new (std::nothrow) Scratch{nullptr, 0};
        if (s == nullptr || pthread_setspecific(scratch_key(), s) != 0) return nullptr;
    }
    if (s->size < floats) {
        std::free(s->data);
        s->data = static_cast<float*>(std::malloc(floats * sizeof(float)));
        s->size = s->data != nullptr ? floats : 0;
    }
    return s->data;
}

// Probabilities times values for kRows queries into sums ([kRows][head_dim]); v is this head's
// packed values ([keys][head_dim]). H > 0: head_dim known at compile time (a multiple of the
// vector width), accumulators in registers, as many queries at a time as half the registers hold.
template <class V, std::size_t H>
EMBEDSERVE_VECTOR void weighted_values(const float* scores, std::size_t padded, std::size_t keys,
                                       const float* v, std::size_t head_dim, float* sums) {
    using F = typename V::F;
    if constexpr (H != 0) {
        constexpr std::size_t C = H / V::lanes;
        constexpr std::size_t G = std::max<std::size_t>(1, std::min(kRows, V::registers / 2 / C));
        for (std::size_t r0 = 0; r0 < kRows; r0 += G) {
            F acc[G][C] = {};
            for (std::size_t j = 0; j < keys; ++j) {
                F vj[C];  // this key's value row, read once for the G queries
                for (std::size_t c = 0; c < C; ++c) {
                    F row = at<V>(v + j * H + c * V::lanes);
                    in_register<V>(row);
                    vj[c] = row;
                }
                for (std::size_t r = 0; r < G; ++r) {
                    const float p = scores[(r0 + r) * padded + j];
                    for (std::size_t c = 0; c < C; ++c) acc[r][c] += p * vj[c];
                }
            }
            for (std::size_t r = 0; r < G; ++r) {
                for (std::size_t c = 0; c < C; ++c) {
                    at<V>(sums + (r0 + r) * H + c * V::lanes) = acc[r][c];
                }
            }
        }
    } else {
        std::fill(sums, sums + kRows * head_dim, 0.0f);
        for (std::size_t j = 0; j < keys; ++j) {
            const float* vj = v + j * head_dim;
            for (std::size_t r = 0; r < kRows; ++r) {
                const float p = scores[r * padded + j];
                for (std::size_t d = 0; d < head_dim; ++d) sums[r * head_dim + d] += p * vj[d];
            }
        }
    }
}

// keys_t[d][j] = k[j][d] for `keys` rows of `head_dim` floats (`stride` apart): 4 keys x 4
// dimensions at a time through registers (4 loads, 8 shuffles, 4 stores for 16 floats, where one
// at a time is a load and a store each), the edges one by one.
EMBEDSERVE_VECTOR void transpose_keys(const float* k, std::size_t stride, std::size_t keys,
                                      std::size_t head_dim, float* keys_t, std::size_t padded) {
    using V4 = Simd<4>;
    using F4 = V4::F;
    const std::size_t dims4 = head_dim / 4 * 4;
    std::size_t j = 0;
    for (; j + 4 <= keys; j += 4) {
        const float* r0 = k + j * stride;
        for (std::size_t d = 0; d < dims4; d += 4) {
            const F4& a = at<V4>(r0 + d);
            const F4& b = at<V4>(r0 + stride + d);
            const F4& c = at<V4>(r0 + 2 * stride + d);
            const F4& e = at<V4>(r0 + 3 * stride + d);
            const F4 ab_lo = __builtin_shufflevector(a, b, 0, 4, 1, 5);
            const F4 ab_hi = __builtin_shufflevector(a, b, 2, 6, 3, 7);
            const F4 ce_lo = __builtin_shufflevector(c, e, 0, 4, 1, 5);
            const F4 ce_hi = __builtin_shufflevector(c, e, 2, 6, 3, 7);
            float* dim_row = keys_t + d * padded + j;  // dimension d, keys j..j+3
            at<V4>(dim_row) = __builtin_shufflevector(ab_lo, ce_lo, 0, 1, 4, 5);
            at<V4>(dim_row + padded) = __builtin_shufflevector(ab_lo, ce_lo, 2, 3, 6, 7);
            at<V4>(dim_row + 2 * padded) = __builtin_shufflevector(ab_hi, ce_hi, 0, 1, 4, 5);
            at<V4>(dim_row + 3 * padded) = __builtin_shufflevector(ab_hi, ce_hi, 2, 3, 6, 7);
        }
        for (std::size_t r = 0; r < 4; ++r) {
            for (std::size_t d = dims4; d < head_dim; ++d) {
                keys_t[d * padded + j + r] = r0[r * stride + d];
            }
        }
    }
    for (; j < keys; ++j) {
        for (std::size_t d = 0; d < head_dim; ++d) keys_t[d * padded + j] = k[j * stride + d];
    }
}

// One (sequence, head) unit with vectors of V and head_dim H (0: any, read from the shape).
template <class V, std::size_t H>
EMBEDSERVE_VECTOR void unit_body(const AttentionShape& shape, const AttentionInputs& in,
                                 std::size_t unit, float* out) {
    using F = typename V::F;
    constexpr std::size_t lanes = V::lanes;
    const std::size_t seq = shape.seq;
    const std::size_t head_dim = H ? H : shape.head_dim;
    const std::size_t width = shape.heads * head_dim;
    const std::size_t b = unit / shape.heads;
    const std::size_t h = unit % shape.heads;
    const std::size_t keys = attended_keys(in.mask, seq, b);
    const std::size_t padded = round_up(keys, lanes);
    const std::size_t head = h * head_dim;

    // k transposed ([head_dim][padded keys], zero past the span), the score block
    // ([kRows][padded]), the scaled queries and the weighted values ([kRows][head_dim] each),
    // each key's mask term ([padded]: 0, -10000 masked inside the span, -1e30 past it), and
    // this head's values packed ([keys][head_dim]): read in place, rows a whole hidden width
    // apart fell into a few cache sets, and from ~100 keys on each pass reread them from L2.
    float* keys_t = scratch(head_dim * padded + kRows * padded + 2 * kRows * head_dim + padded +
                            keys * head_dim);
    if (keys_t == nullptr) {  // out of memory: NaN rows surface, where zeros would not
        for (std::size_t i = 0; i < seq; ++i) {
            float* o = out + (b * seq + i) * width + head;
            std::fill(o, o + head_dim, std::nanf(""));
        }
        return;
    }
    float* scores = keys_t + head_dim * padded;
    float* queries = scores + kRows * padded;
    float* sums = queries + kRows * head_dim;
    float* key_mask = sums + kRows * head_dim;
    float* values = key_mask + padded;
    std::fill(keys_t, keys_t + head_dim * padded, 0.0f);
    std::fill(key_mask, key_mask + padded, kPastSpan);
    transpose_keys(in.k + b * seq * width + head, width, keys, head_dim, keys_t, padded);
    for (std::size_t j = 0; j < keys; ++j) {
        key_mask[j] = in.mask[b * seq + j] != 0 ? 0.0f : kMaskedKey;
        std::memcpy(values + j * head_dim, in.v + (b * seq + j) * width + head,
                    head_dim * sizeof(float));
    }
    const float* bias_rows = nullptr;
    if (in.position_bias != nullptr) {
        const std::size_t pb = in.position_bias_batch == 1 ? 0 : b;
        bias_rows = in.position_bias + (pb * shape.heads + h) * seq * seq;
    }

    // Every query, the padding's too: ColBERT's query expansion reads the vectors of masked
    // [MASK] tokens, which attend to the real keys like any other.
    for (std::size_t i0 = 0; i0 < seq; i0 += kRows) {
        const std::size_t rows = std::min(kRows, seq - i0);
        for (std::size_t r = 0; r < kRows; ++r) {
            float* qr = queries + r * head_dim;
            const float* row = in.q + (b * seq + i0 + std::min(r, rows - 1)) * width + head;
            for (std::size_t d = 0; d < head_dim; ++d) {
                const float bias = in.q_bias ? in.q_bias[head + d] : 0.0f;
                qr[d] = (row[d] + bias) * shape.scale;
            }
        }
        // Scores: kRows queries against two vectors of keys at a time (they share each query's
        // broadcast), then a last single vector; plus the mask.
        std::size_t j0 = 0;
        for (; j0 + 2 * lanes <= padded; j0 += 2 * lanes) {
            F acc[kRows][2] = {};
            for (std::size_t d = 0; d < head_dim; ++d) {
                const F k0 = at<V>(keys_t + d * padded + j0);
                const F k1 = at<V>(keys_t + d * padded + j0 + lanes);
                for (std::size_t r = 0; r < kRows; ++r) {
                    const float qd = queries[r * head_dim + d];
                    acc[r][0] += qd * k0;
                    acc[r][1] += qd * k1;
                }
            }
            const F mask0 = at<V>(key_mask + j0);
            const F mask1 = at<V>(key_mask + j0 + lanes);
            for (std::size_t r = 0; r < kRows; ++r) {
                at<V>(scores + r * padded + j0) = acc[r][0] + mask0;
                at<V>(scores + r * padded + j0 + lanes) = acc[r][1] + mask1;
            }
        }
        for (; j0 < padded; j0 += lanes) {
            F acc[kRows] = {};
            for (std::size_t d = 0; d < head_dim; ++d) {
                const F kd = at<V>(keys_t + d * padded + j0);
                for (std::size_t r = 0; r < kRows; ++r) acc[r] += queries[r * head_dim + d] * kd;
            }
            const F mask = at<V>(key_mask + j0);
            for (std::size_t r = 0; r < kRows; ++r) at<V>(scores + r * padded + j0) = acc[r] + mask;
        }
        // Softmax over the span; the sum's reciprocal is applied to the output instead.
        float inverse[kRows] = {};
        for (std::size_t r = 0; r < rows; ++r) {
            float* row = scores + r * padded;
            if (bias_rows != nullptr) {
                const float* bias = bias_rows + (i0 + r) * seq;
                for (std::size_t j = 0; j < keys; ++j) row[j] += bias[j];
            }
            F best = at<V>(row);
            for (std::size_t j0 = lanes; j0 < padded; j0 += lanes) {
                const F x = at<V>(row + j0);
                best = x > best ? x : best;
            }
            const F top = F{} + lane_max<V>(best);
            F sum = {};
            std::size_t first = 0;  // of the next vectors to exponentiate
            for (; first + kInterleave * lanes <= padded; first += kInterleave * lanes) {
                F e[kInterleave];
                for (std::size_t i = 0; i < kInterleave; ++i) {
                    e[i] = at<V>(row + first + i * lanes) - top;
                }
                exp_nonpositive<V, kInterleave>(e);
                for (std::size_t i = 0; i < kInterleave; ++i) {
                    at<V>(row + first + i * lanes) = e[i];
                    sum += e[i];
                }
            }
            for (; first < padded; first += lanes) {
                F e = at<V>(row + first) - top;
                exp_nonpositive<V>(e);
                at<V>(row + first) = e;
                sum += e;
            }
            inverse[r] = 1.0f / lane_sum<V>(sum);
        }
        weighted_values<V, H>(scores, padded, keys, values, head_dim, sums);
        for (std::size_t r = 0; r < rows; ++r) {
            float* o = out + (b * seq + i0 + r) * width + head;
            for (std::size_t d = 0; d < head_dim; ++d) {
                // Probabilities sum to one, so v's bias adds once to the weighted sum.
                const float bias = in.v_bias ? in.v_bias[head + d] : 0.0f;
                o[d] = sums[r * head_dim + d] * inverse[r] + bias;
            }
        }
    }
}

template <class V>
EMBEDSERVE_VECTOR void head_unit(const AttentionShape& shape, const AttentionInputs& in,
                                 std::size_t unit, float* out) {
    switch (shape.head_dim) {
        case 32:
            return unit_body<V, 32>(shape, in, unit, out);
        case 64:
            return unit_body<V, 64>(shape, in, unit, out);
        default:
            return unit_body<V, 0>(shape, in, unit, out);
    }
}

EMBEDSERVE_KERNELS(attention, head_unit,
                   (const AttentionShape& shape, const AttentionInputs& in, std::size_t unit,
                    float* out),
                   (shape, in, unit, out))

}  // namespace

std::size_t attended_keys(const std::int32_t* mask, std::size_t seq, std::size_t b) noexcept {
    const std::int32_t* row = mask + b * seq;
    for (std::size_t j = seq; j > 0; --j) {
        if (row[j - 1] != 0) return j;
    }
    return seq;
}

void attention_unit(const AttentionShape& shape, const AttentionInputs& in, std::size_t unit,
                    float* out) {
    EMBEDSERVE_DISPATCH(attention, (shape, in, unit, out))
}

}  // namespace embedserve
