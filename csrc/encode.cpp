#include "embedserve/encode.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <system_error>

namespace embedserve {
namespace {

constexpr char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// All 4096 two-char encodings of a 12-bit group, so three bytes cost two table loads.
struct base64_pair_table {
    char chars[4096 * 2];
    constexpr base64_pair_table() : chars{} {
        for (std::size_t i = 0; i < 4096; ++i) {
            chars[2 * i] = base64_alphabet[i >> 6];
            chars[2 * i + 1] = base64_alphabet[i & 63u];
        }
    }
};
constexpr base64_pair_table base64_pairs{};

bool host_is_little_endian() noexcept {
    const std::uint32_t probe = 1;
    unsigned char first;
    std::memcpy(&first, &probe, 1);
    return first == 1;
}

}  // namespace

void base64_encode(const unsigned char* data, std::size_t size, char* out) noexcept {
    std::size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        const std::uint32_t triple = (std::uint32_t{data[i]} << 16) |
                                     (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
        std::memcpy(out, &base64_pairs.chars[2 * (triple >> 12)], 2);
        std::memcpy(out + 2, &base64_pairs.chars[2 * (triple & 0xFFFu)], 2);
        out += 4;
    }
    const std::size_t rest = size - i;
    if (rest == 1) {
        const std::uint32_t triple = std::uint32_t{data[i]} << 16;
        out[0] = base64_alphabet[(triple >> 18) & 63u];
        out[1] = base64_alphabet[(triple >> 12) & 63u];
        out[2] = '=';
        out[3] = '=';
    } else if (rest == 2) {
        const std::uint32_t triple = (std::uint32_t{data[i]} << 16) |
                                     (std::uint32_t{data[i + 1]} << 8);
        out[0] = base64_alphabet[(triple >> 18) & 63u];
        out[1] = base64_alphabet[(triple >> 12) & 63u];
        out[2] = base64_alphabet[(triple >> 6) & 63u];
        out[3] = '=';
    }
}

void encode_base64_rows(const float* x, std::size_t rows, std::size_t cols,
                        std::ptrdiff_t row_stride, char* const* out_rows) {
    const std::size_t bytes = cols * sizeof(float);
    if (host_is_little_endian()) {
        for (std::size_t r = 0; r < rows; ++r) {
            const float* row = x + static_cast<std::ptrdiff_t>(r) * row_stride;
            base64_encode(reinterpret_cast<const unsigned char*>(row), bytes, out_rows[r]);
        }
        return;
    }
    // Big-endian host: the wire format is little-endian, so swap each float into a scratch row.
    std::vector<unsigned char> scratch(bytes);
    for (std::size_t r = 0; r < rows; ++r) {
        const auto* row = reinterpret_cast<const unsigned char*>(
            x + static_cast<std::ptrdiff_t>(r) * row_stride);
        for (std::size_t j = 0; j < bytes; j += sizeof(float)) {
            for (std::size_t k = 0; k < sizeof(float); ++k) {
                scratch[j + k] = row[j + sizeof(float) - 1 - k];
            }
        }
        base64_encode(scratch.data(), bytes, out_rows[r]);
    }
}

char* write_json_float(char* first, float value) noexcept {
    // Shortest round-trip form: at most 15 chars ("-1.17549435e-38"), so the room never runs out.
    const std::to_chars_result result = std::to_chars(first, first + json_float_room, value);
    char* last = result.ptr;
    for (const char* p = first; p != last; ++p) {
        if (*p == '.' || *p == 'e') {
            return last;
        }
    }
    // Integral ("1", "-0", "16777216"): keep it a float for JSON readers, as json/orjson do.
    last[0] = '.';
    last[1] = '0';
    return last + 2;
}

json_status encode_json_rows(const float* x, std::size_t rows, std::size_t cols,
                             std::ptrdiff_t row_stride, std::string& text,
                             std::vector<std::size_t>& offsets) {
    const std::size_t row_room = 2 + cols * json_float_room;
    // Typical unit-norm embeddings take ~12 chars a number; grow geometrically past that.
    text.assign(rows * (2 + cols * 13), '\0');
    offsets.assign(rows + 1, 0);
    std::size_t used = 0;
    for (std::size_t r = 0; r < rows; ++r) {
        if (text.size() - used < row_room) {
            text.resize(std::max(text.size() * 2, used + row_room));
        }
        const float* row = x + static_cast<std::ptrdiff_t>(r) * row_stride;
        char* const start = &text[used];
        char* p = start;
        *p++ = '[';
        for (std::size_t j = 0; j < cols; ++j) {
            const float value = row[j];
            if (!std::isfinite(value)) {
                text.resize(used);
                return json_status{false, r, j, value};
            }
            if (j != 0) {
                *p++ = ',';
            }
            p = write_json_float(p, value);
        }
        *p++ = ']';
        used += static_cast<std::size_t>(p - start);
        offsets[r + 1] = used;
    }
    text.resize(used);
    return json_status{true, 0, 0, 0.0f};
}

void quantize_rows(const float* x, std::size_t rows, std::size_t cols, std::ptrdiff_t row_stride,
                   const float* lo, const float* hi, bool is_signed, std::uint8_t* out) noexcept {
    // float32 throughout, as sentence-transformers computes on float32 arrays: in double, a value
    // on a bin edge lands in the other bin (1 of the 76,800 values of MiniLM's reference vectors).
    // Signed output is the unsigned bin minus 128, i.e. the bin with its top bit flipped.
    const std::uint8_t flip = is_signed ? 0x80u : 0u;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* row = x + static_cast<std::ptrdiff_t>(r) * row_stride;
        std::uint8_t* dst = out + r * cols;
        for (std::size_t j = 0; j < cols; ++j) {
            float step = (hi[j] - lo[j]) / 255.0f;
            if (step == 0.0f) {
                step = 1.0f;  // sentence-transformers' np.where(steps == 0, 1, steps)
            }
            const float bin = std::floor((row[j] - lo[j]) / step);
            // !(bin >= 0) also catches NaN.
            const float clamped = !(bin >= 0.0f) ? 0.0f : std::min(bin, 255.0f);
            dst[j] = static_cast<std::uint8_t>(static_cast<unsigned>(clamped) ^ flip);
        }
    }
}

void pack_sign_bits(const float* x, std::size_t rows, std::size_t cols, std::ptrdiff_t row_stride,
                    bool is_signed, std::uint8_t* out) noexcept {
    const std::uint8_t flip = is_signed ? 0x80u : 0u;
    const std::size_t width = packed_bits_length(cols);
    for (std::size_t r = 0; r < rows; ++r) {
        const float* row = x + static_cast<std::ptrdiff_t>(r) * row_stride;
        std::uint8_t* dst = out + r * width;
        for (std::size_t k = 0; k < width; ++k) {
            unsigned byte = 0;
            for (std::size_t b = 0; b < 8; ++b) {
                const std::size_t j = k * 8 + b;
                const unsigned bit = (j < cols && row[j] > 0.0f) ? 1u : 0u;
                byte |= bit << (7 - b);
            }
            dst[k] = static_cast<std::uint8_t>(byte ^ flip);
        }
    }
}

}  // namespace embedserve
