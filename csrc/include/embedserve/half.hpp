#pragma once
/// \file half.hpp
/// IEEE 754 binary16 -> binary32 conversion, portable C++17 (no F16C, no compiler extensions).

#include <cstdint>
#include <cstring>

namespace embedserve {

/// Returns the bit pattern of a float32 (memcpy, so no aliasing UB).
inline std::uint32_t float_to_bits(float value) noexcept {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

/// Returns the float32 whose bit pattern is `bits`.
inline float bits_to_float(std::uint32_t bits) noexcept {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

/// Converts binary16 bits to the float32 of exactly the same value: normals, subnormals, +-0 and
/// +-inf exactly; NaN stays NaN (sign and payload kept, a signalling NaN comes back quiet).
inline float half_to_float(std::uint16_t half) noexcept {
    // Branch-free (after Marat Dukhan's FP16 library) so that loops over a row can vectorise:
    // both candidate results are computed and one is selected by the exponent.
    const std::uint32_t w = static_cast<std::uint32_t>(half) << 16;
    const std::uint32_t sign = w & 0x80000000u;
    const std::uint32_t two_w = w + w;  // exponent in bits 27..31, mantissa below, sign gone

    // Normal, inf, NaN: move exponent+mantissa into float position, which adds 224 to the biased
    // exponent; the 2^-112 scale brings that to +112 (= 127 - 15). Exponent 31 lands on 255.
    constexpr std::uint32_t exp_offset = 0xE0u << 23;
    const float normalized = bits_to_float((two_w >> 4) + exp_offset) * 0x1.0p-112f;

    // Subnormal: put the mantissa under the exponent of 0.5 and subtract 0.5, which is exact.
    constexpr std::uint32_t magic_mask = 126u << 23;
    const float denormalized = bits_to_float((two_w >> 17) | magic_mask) - 0.5f;

    // Select with a bit mask rather than ?: so GCC keeps both FP results unconditional (with
    // -ftrapping-math it will not if-convert a branch holding FP ops, and the loop stays scalar).
    constexpr std::uint32_t denormalized_cutoff = 1u << 27;  // exponent field == 0
    const std::uint32_t is_subnormal = 0u - static_cast<std::uint32_t>(two_w < denormalized_cutoff);
    const std::uint32_t magnitude = (float_to_bits(denormalized) & is_subnormal) |
                                    (float_to_bits(normalized) & ~is_subnormal);
    return bits_to_float(sign | magnitude);
}

}  // namespace embedserve
