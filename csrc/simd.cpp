#include <cstdlib>
#include <cstring>

#include "embedserve/simd.hpp"

#if EMBEDSERVE_X86_VARIANTS
#include <cpuid.h>
#endif

namespace embedserve {
namespace {

#if EMBEDSERVE_X86_VARIANTS
// Read from CPUID and XCR0 here rather than through __builtin_cpu_supports: the wheel's compiler
// (zig's clang) answers that from a runtime library that reported no AVX at all on an AVX2
// CPU, and GCC's "arch=" clones would skip an AMD CPU whatever it supports.
bool has(unsigned reg, unsigned bit) { return (reg >> bit) & 1u; }

unsigned long long enabled_state() {  // XCR0: the register state the OS saves on a switch
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<unsigned long long>(hi) << 32) | lo;
}
#endif

Isa supported() noexcept {
#if EMBEDSERVE_X86_VARIANTS
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid(1, &a, &b, &c, &d) == 0) return Isa::baseline;
    const bool fma = has(c, 12), xsave_enabled = has(c, 27), avx = has(c, 28);
    if (!(fma && xsave_enabled && avx)) return Isa::baseline;
    const unsigned long long state = enabled_state();
    if ((state & 0x6) != 0x6) return Isa::baseline;  // XMM and YMM
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return Isa::avx;
    if (has(b, 16) && (state & 0xe6) == 0xe6) return Isa::avx512;  // + opmask, ZMM
    return has(b, 5) ? Isa::avx2 : Isa::avx;
#else
    return Isa::baseline;
#endif
}

Isa capped(Isa best) noexcept {
    const char* cap = std::getenv("EMBEDSERVE_KERNEL_ISA");
    if (cap == nullptr) return best;
    // Isa counts from the best, so a cap never raises what the CPU has.
    for (int i = static_cast<int>(best) + 1; i <= static_cast<int>(Isa::baseline); ++i) {
        const Isa lower = static_cast<Isa>(i);
        if (std::strcmp(cap, isa_name(lower)) == 0) return lower;
    }
    return best;
}

}  // namespace

Isa kernel_isa() noexcept {
    static const Isa isa = capped(supported());
    return isa;
}

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::avx512:
            return "avx512";
        case Isa::avx2:
            return "avx2";
        case Isa::avx:
            return "avx";
        default:
            return "baseline";
    }
}

}  // namespace embedserve
