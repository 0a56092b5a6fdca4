#pragma once

// Vector helpers for the kernels that ONNX Runtime runs through embedserve's custom ops
// (attention.cpp, epilogues.cpp): GCC/Clang vector types, which the compiler lowers to the
// instruction set of each clone (one zmm, two ymm or four xmm registers). Kept in registers
// where the auto-vectorizer alone spilled accumulators, and they vectorize the reductions
// (softmax, LayerNorm) that it won't reorder by itself.

#include <cstddef>
#include <cstdint>
#include <cstring>

// Kernels marked EMBEDSERVE_SIMD_CLONES are built once per instruction set and run with the
// one the CPU has, picked at load time (GCC/Clang function multiversioning): a
// wheel can't assume AVX-512 or AVX2, and the default build only has SSE2.
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define EMBEDSERVE_SIMD_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define EMBEDSERVE_SIMD_CLONES
#endif

// No helper here takes or returns a vector by value: each clone would then need its own copy in
// its own instruction set, and how a 64-byte vector is passed differs between them (GCC's
// -Wpsabi note; clang refuses to compile it). Vectors are read and written through references
// (`at`) and changed in place. Helpers are forced inline all the same, so each clone gets
// code in its own instruction set.
#define EMBEDSERVE_VECTOR inline __attribute__((always_inline))

namespace embedserve {

constexpr std::size_t kLanes = 16;  // floats per vector: one AVX-512 register

// Unaligned (4-byte) vectors that may alias the floats they are read from.
typedef float f16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef std::int32_t i16 __attribute__((vector_size(64), aligned(4), may_alias));

/// The 16 floats at `p`, to read or assign.
EMBEDSERVE_VECTOR const f16& at(const float* p) { return *reinterpret_cast<const f16*>(p); }
EMBEDSERVE_VECTOR f16& at(float* p) { return *reinterpret_cast<f16*>(p); }

// x = exp(x) for x <= 0 (softmax's scores minus their maximum, GELU's -z^2), within ~2 ulp of
// expf: 2^n * e^r with n = round(x / ln2), |r| <= ln2/2, e^r by a degree-6 polynomial. Below -87
// it gives 0, where expf underflows too.
EMBEDSERVE_VECTOR void exp_nonpositive(f16& x) {
    const f16 floor_ = f16{} - 87.0f;
    const f16 clamped = x < floor_ ? floor_ : x;
    const f16 round = f16{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const f16 n = (clamped * 1.44269504f + round) - round;
    f16 r = clamped - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    f16 p = f16{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const i16 bits = (__builtin_convertvector(n, i16) + 127) << 23;
    const f16 power = reinterpret_cast<const f16&>(bits);
    const f16 result = p * power;
    x = x < floor_ ? f16{} : result;
}

EMBEDSERVE_VECTOR float lane_max(const f16& v) {
    float best = v[0];
    for (std::size_t i = 1; i < kLanes; ++i) best = v[i] > best ? v[i] : best;
    return best;
}

EMBEDSERVE_VECTOR float lane_sum(const f16& v) {
    float sum = 0.0f;
    for (std::size_t i = 0; i < kLanes; ++i) sum += v[i];
    return sum;
}

}  // namespace embedserve
