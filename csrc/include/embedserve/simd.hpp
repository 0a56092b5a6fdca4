#pragma once

// Vector helpers for the kernels that ONNX Runtime runs through embedserve's custom ops
// (attention.cpp, epilogues.cpp): GCC/Clang vector types. Kept in registers where the
// auto-vectorizer alone spilled accumulators, and they vectorize the reductions (softmax,
// LayerNorm) that it won't reorder by itself.
//
// Each kernel is a template over `Simd<N>`, built once per instruction set with that set's own
// register width (`Isa`) and picked when it runs. The width must match: a 16-float vector
// type in code built for SSE2 is split by GCC into one operation per element for some
// operations (float-to-int conversion, selects). The first build had one 16-float kernel in
// `target_clones`, whose SSE2 clone an AMD CPU ran (GCC's `arch=` clones go by CPU model) and
// the wheel ran everywhere (its compiler's CPU check saw no AVX): the engine at ~0.35x of
// ONNX Runtime's own kernels (bench/NOTES.md, wave 14).

#include <cstddef>
#include <cstdint>

// The kernels of an instruction set are non-template functions marked EMBEDSERVE_TARGET(...)
// that inline a template instantiated for its width (clang takes no `target_clones` on
// templates, and the wheel can assume nothing beyond x86-64 or the baseline of its platform).
#if defined(__GNUC__) && defined(__x86_64__)
#define EMBEDSERVE_X86_VARIANTS 1
#define EMBEDSERVE_TARGET(isa) __attribute__((target(isa)))
#else
#define EMBEDSERVE_X86_VARIANTS 0
#endif

// No helper here takes or returns a vector by value: how a vector is passed differs between
// instruction sets (GCC's -Wpsabi note; clang refuses some of it outright). Vectors are read
// and written through references (`at`) and changed in place, and helpers are forced inline so
// each variant gets them in its own instruction set.
#define EMBEDSERVE_VECTOR inline __attribute__((always_inline))

namespace embedserve {

/// The instruction sets the kernels are built for, best first.
enum class Isa { avx512, avx2, avx, baseline };

/// The best of them this CPU and OS support, decided once per process; EMBEDSERVE_KERNEL_ISA
/// (avx512, avx2, avx, baseline) caps it, so tests can run every variant the CPU has.
Isa kernel_isa() noexcept;

/// "avx512", "avx2", "avx" or "baseline".
const char* isa_name(Isa isa) noexcept;

// EMBEDSERVE_KERNELS(name, kernel, params, args) defines one plain function per instruction set,
// name_avx512, name_avx2, name_avx (x86-64) and name_baseline, each running kernel<Simd<width>>
// built for that set; EMBEDSERVE_DISPATCH(name, args) returns through the one kernel_isa() picks.
#if EMBEDSERVE_X86_VARIANTS
#define EMBEDSERVE_X86_KERNELS(name, kernel, params, args)                          \
    EMBEDSERVE_TARGET("avx512f") void name##_avx512 params { kernel<Simd<16>> args; } \
    EMBEDSERVE_TARGET("avx2,fma") void name##_avx2 params { kernel<Simd<8>> args; }   \
    EMBEDSERVE_TARGET("avx,fma") void name##_avx params { kernel<Simd<8>> args; }
#define EMBEDSERVE_X86_CASES(name, args) \
    case Isa::avx512:                    \
        return name##_avx512 args;       \
    case Isa::avx2:                      \
        return name##_avx2 args;         \
    case Isa::avx:                       \
        return name##_avx args;
#else
#define EMBEDSERVE_X86_KERNELS(name, kernel, params, args)
#define EMBEDSERVE_X86_CASES(name, args)
#endif
#define EMBEDSERVE_KERNELS(name, kernel, params, args)  \
    EMBEDSERVE_X86_KERNELS(name, kernel, params, args) \
    void name##_baseline params { kernel<Simd<4>> args; }
#define EMBEDSERVE_DISPATCH(name, args)   \
    switch (kernel_isa()) {               \
        EMBEDSERVE_X86_CASES(name, args)  \
        default:                          \
            return name##_baseline args;  \
    }

/// N floats per vector: 16 for AVX-512, 8 for AVX and AVX2, 4 for SSE2 and NEON.
template <std::size_t N>
struct Simd {
    static constexpr std::size_t lanes = N;
    /// Vector registers the set has (32 with AVX-512, else 16): how many accumulators a block
    /// may keep live without spilling.
    static constexpr std::size_t registers = N == 16 ? 32 : 16;

    // Unaligned (4-byte) vectors that may alias the floats they are read from.
    typedef float F __attribute__((vector_size(N * sizeof(float)), aligned(4), may_alias));
    typedef std::int32_t I
        __attribute__((vector_size(N * sizeof(std::int32_t)), aligned(4), may_alias));
};

// The helpers take the width as their first template argument: at<V>(p), exp_nonpositive<V>(x).
// (GCC does not see a vector type in a class template's own member bodies before they are
// instantiated, so they are free templates over the Simd.)

/// The lanes floats at `p`, to read or assign.
template <class V>
EMBEDSERVE_VECTOR const typename V::F& at(const float* p) {
    return *reinterpret_cast<const typename V::F*>(p);
}
template <class V>
EMBEDSERVE_VECTOR typename V::F& at(float* p) {
    return *reinterpret_cast<typename V::F*>(p);
}

// Vectors that the kernels run through a long chain of dependent steps (exp, GELU's erf)
// together, each step for all of them before the next. One vector's chain is ~50 cycles of
// dependent multiplies and adds, about what the core's floating-point scheduler holds: written
// one vector after another, the next vector's steps wait outside it, and a loop over them runs
// at the chain's latency rather than at what the FMA units could do. Two at a time made bias +
// GELU 1.12-1.35x as fast and attention ~1.07x (AVX2, Zen 3; four were no faster: registers run
// out). Same operations per element in the same order: the same bits.
constexpr std::size_t kInterleave = 2;

// xs[i] = exp(xs[i]) for x <= 0 (softmax's scores minus their maximum, GELU's -z^2), within ~2 ulp
// of expf: 2^n * e^r with n = round(x / ln2), |r| <= ln2/2, e^r by a degree-6 polynomial. Below
// -87 it gives 0, where expf underflows too. The N vectors step by step together (kInterleave).
template <class V, std::size_t N>
EMBEDSERVE_VECTOR void exp_nonpositive(typename V::F (&xs)[N]) {
    using F = typename V::F;
    using I = typename V::I;
    const F floor_ = F{} - 87.0f;
    const F round = F{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    F n[N], r[N], p[N];
    for (std::size_t i = 0; i < N; ++i) {
        const F clamped = xs[i] < floor_ ? floor_ : xs[i];
        n[i] = (clamped * 1.44269504f + round) - round;
        r[i] = clamped - n[i] * 0.693359375f;
    }
    for (std::size_t i = 0; i < N; ++i) r[i] = r[i] + n[i] * 2.12194440e-4f;
    for (std::size_t i = 0; i < N; ++i) p[i] = F{} + 1.9875691500e-4f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] + 1.3981999507e-3f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] + 8.3334519073e-3f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] + 4.1665795894e-2f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] + 1.6666665459e-1f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] + 5.0000001201e-1f;
    for (std::size_t i = 0; i < N; ++i) p[i] = p[i] * r[i] * r[i] + r[i] + 1.0f;
    for (std::size_t i = 0; i < N; ++i) {
        const I bits = (__builtin_convertvector(n[i], I) + 127) << 23;
        const F result = p[i] * __builtin_bit_cast(F, bits);
        xs[i] = xs[i] < floor_ ? F{} : result;
    }
}

// x = exp(x) for one vector x <= 0.
template <class V>
EMBEDSERVE_VECTOR void exp_nonpositive(typename V::F& x) {
    typename V::F one[1] = {x};
    exp_nonpositive<V, 1>(one);
    x = one[0];
}

// Makes `x` opaque to the optimizer, as if computed here in a register. A vector read once and
// used by several FMAs is then kept in a register, where GCC otherwise folds the read into every
// FMA as a memory operand when registers are short. In attention's weighted sum on AVX2 that made
// 8 vector loads and 2 broadcasts for each 8 FMAs, a loop bound by the two loads a cycle, not by
// the FMAs: held in registers, attention ran 1.15-1.26x as fast on the engine's own batches
// (bench/NOTES.md, wave 17). Only for 8-float vectors on x86 (AVX, AVX2: 16 registers; AVX-512
// has 32), and only for GCC: clang keeps such a row in a register by itself, and refuses a
// 256-bit "x" operand in a template not compiled for AVX as a whole.
template <class V>
EMBEDSERVE_VECTOR void in_register(typename V::F& x) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
    if constexpr (V::lanes == 8) asm("" : "+x"(x));
#else
    (void)x;
#endif
}

template <class V>
EMBEDSERVE_VECTOR float lane_max(const typename V::F& v) {
    float best = v[0];
    for (std::size_t i = 1; i < V::lanes; ++i) best = v[i] > best ? v[i] : best;
    return best;
}

template <class V>
EMBEDSERVE_VECTOR float lane_sum(const typename V::F& v) {
    float sum = 0.0f;
    for (std::size_t i = 0; i < V::lanes; ++i) sum += v[i];
    return sum;
}

}  // namespace embedserve
