#pragma once
/// \file encode.hpp
/// Wire encodings of embedding rows: base64 of little-endian float32, and JSON number arrays.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace embedserve {

/// Length of the padded base64 text for `bytes` input bytes.
constexpr std::size_t base64_length(std::size_t bytes) noexcept { return (bytes + 2) / 3 * 4; }

/// Writes `size` bytes as standard base64 (A-Z a-z 0-9 + /, '=' padding) to
/// out[0 .. base64_length(size)); no terminator.
void base64_encode(const unsigned char* data, std::size_t size, char* out) noexcept;

/// Encodes each of `rows` rows of `cols` float32 as the base64 of its little-endian bytes
/// (byte-swapped on big-endian hosts) into out_rows[r], which must hold base64_length(4 * cols)
/// chars. Row r starts at x + r * row_stride (elements). Throws std::bad_alloc only.
void encode_base64_rows(const float* x, std::size_t rows, std::size_t cols,
                        std::ptrdiff_t row_stride, char* const* out_rows);

/// Room write_json_float may use for one number; the longest it writes is 17 chars.
constexpr std::size_t json_float_room = 24;

/// Writes a finite float as the shortest decimal that reads back as the same float32
/// (std::to_chars), adding ".0" to integral values so JSON readers see a float ("-0.0" too).
/// Needs json_float_room bytes at `first`; returns one past the last char written.
char* write_json_float(char* first, float value) noexcept;

/// First non-finite element met by encode_json_rows, if any.
struct json_status {
    /// True when every element was finite and every row was written.
    bool ok;
    /// Row of the offending element (meaningful when !ok).
    std::size_t row;
    /// Column of the offending element (meaningful when !ok).
    std::size_t col;
    /// The offending value: NaN, +inf or -inf (meaningful when !ok).
    float value;
};

/// Writes each row as a JSON array "[a,b,...]" (no spaces) into `text`, which is replaced.
/// offsets gets rows + 1 entries; row r is text[offsets[r] .. offsets[r + 1]). Stops at the first
/// non-finite element and reports it (text and offsets are then partial). Throws std::bad_alloc.
json_status encode_json_rows(const float* x, std::size_t rows, std::size_t cols,
                             std::ptrdiff_t row_stride, std::string& text,
                             std::vector<std::size_t>& offsets);

/// Packed size of `cols` sign bits: ceil(cols / 8) bytes.
constexpr std::size_t packed_bits_length(std::size_t cols) noexcept { return (cols + 7) / 8; }

/// Scalar quantization of each of `rows` rows of `cols` floats to one byte per value, bit for
/// bit as sentence-transformers' quantize_embeddings with ranges [lo; hi]: in float32,
/// step_j = (hi[j] - lo[j]) / 255 (1 where that is 0), q = clamp(floor((x - lo[j]) / step_j),
/// 0, 255) (q = 0 where x is NaN). Writes q (uint8) or q - 128 (int8, when `is_signed`) to
/// out[r * cols + j].
void quantize_rows(const float* x, std::size_t rows, std::size_t cols, std::ptrdiff_t row_stride,
                   const float* lo, const float* hi, bool is_signed, std::uint8_t* out) noexcept;

/// Sign bits of each row (1 where x > 0), packed 8 per byte with the first column in the most
/// significant bit and the last byte zero-padded (numpy.packbits). Writes the byte (ubinary) or
/// the byte - 128 (binary, when `is_signed`) to out[r * packed_bits_length(cols) + k].
void pack_sign_bits(const float* x, std::size_t rows, std::size_t cols, std::ptrdiff_t row_stride,
                    bool is_signed, std::uint8_t* out) noexcept;

}  // namespace embedserve
