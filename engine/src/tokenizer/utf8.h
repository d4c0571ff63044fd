// UTF-8 helpers for the tokenizer: decoding one character, encoding a code point, and the lossy
// repair of invalid input. The repair replaces each maximal ill-formed subsequence with U+FFFD
// (Unicode's "best practice", which is what Python's bytes.decode('utf-8', errors='replace') and
// Rust's String::from_utf8_lossy do), so invalid bytes never reach the regex engine or the models.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tps::tok {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Length of the well-formed character starting at s[i], or 0 when the bytes there are not one.
size_t utf8_valid_length(std::string_view s, size_t i) noexcept;

// The character starting at s[i] of valid UTF-8 and its length. s must be valid at i.
char32_t utf8_decode(std::string_view s, size_t i, size_t* len) noexcept;

// Byte length of the character starting with byte b of valid UTF-8.
inline size_t utf8_char_length(unsigned char b) noexcept {
    return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

void utf8_append(std::string& out, char32_t cp);

bool utf8_is_valid(std::string_view s) noexcept;

// s with every maximal ill-formed subsequence replaced by U+FFFD.
std::string utf8_repair(std::string_view s);

// The code points of valid UTF-8 text.
std::u32string utf8_to_u32(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);

}  // namespace tps::tok

namespace tps::tok {

// Unicode's White_Space property (25 code points), which Rust's char::is_whitespace and the
// regex \s of tokenizers' added-token lstrip/rstrip use.
constexpr bool is_white_space(char32_t c) noexcept {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

}  // namespace tps::tok
