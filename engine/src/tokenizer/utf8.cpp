// UTF-8 validation and lossy repair after Unicode's Table 3-7 (well-formed byte sequences): a
// lead byte fixes the allowed range of the second byte, and an incomplete or broken sequence is
// replaced by one U+FFFD for its maximal valid prefix.
#include "utf8.h"

namespace tps::tok {
namespace {

// The length of the maximal prefix of a well-formed sequence at s[i] (at least 1), and whether
// that prefix is a whole character.
size_t maximal_subpart(std::string_view s, size_t i, bool* complete) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    *complete = true;
    if (b0 < 0x80) return 1;
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        *complete = false;
        return 1;
    }
    size_t n = 1;
    for (size_t k = 0; k < need; ++k) {
        if (i + n >= s.size()) {
            *complete = false;
            return n;
        }
        const auto b = static_cast<unsigned char>(s[i + n]);
        const unsigned char l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
        if (b < l || b > h) {
            *complete = false;
            return n;
        }
        ++n;
    }
    return n;
}

}  // namespace

size_t utf8_valid_length(std::string_view s, size_t i) noexcept {
    bool complete = false;
    const size_t n = maximal_subpart(s, i, &complete);
    return complete ? n : 0;
}

char32_t utf8_decode(std::string_view s, size_t i, size_t* len) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_char_length(b0);
    *len = n;
    if (n == 1) return b0;
    char32_t cp = b0 & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    return cp;
}

void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

bool utf8_is_valid(std::string_view s) noexcept {
    for (size_t i = 0; i < s.size();) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const size_t n = utf8_valid_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string utf8_repair(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        bool complete = false;
        const size_t n = maximal_subpart(s, i, &complete);
        if (complete) {
            out.append(s.substr(i, n));
        } else {
            out.append(kReplacementUtf8);
        }
        i += n;
    }
    return out;
}

std::u32string utf8_to_u32(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        size_t n = 0;
        out += utf8_decode(s, i, &n);
        i += n;
    }
    return out;
}

std::string u32_to_utf8(std::u32string_view s) {
    std::string out;
    out.reserve(s.size());
    for (const char32_t cp : s) utf8_append(out, cp);
    return out;
}

}  // namespace tps::tok
