// The table is built once: bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF map to themselves; the other
// 68 bytes, in order, map to U+0100, U+0101, ... (bytes_to_unicode() of OpenAI's GPT-2 encoder).
#include "byte_level.h"

#include "utf8.h"

#include <array>

namespace tps::tok {
namespace {

struct Tables {
    std::array<std::string, 256> to_text;
    std::array<int, 324> to_byte{};  // code points below U+0144, -1 where none
    Tables() {
        to_byte.fill(-1);
        int next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const int cp = keep ? b : next++;
            utf8_append(to_text[static_cast<size_t>(b)], static_cast<char32_t>(cp));
            to_byte[static_cast<size_t>(cp)] = b;
        }
    }
};

const Tables& tables() {
    static const Tables t;
    return t;
}

}  // namespace

std::string_view byte_to_unicode(unsigned char b) { return tables().to_text[b]; }

std::string bytes_to_unicode(std::string_view s) {
    const Tables& t = tables();
    std::string out;
    out.reserve(s.size() * 2);
    for (const char c : s) out += t.to_text[static_cast<unsigned char>(c)];
    return out;
}

std::optional<unsigned char> unicode_to_byte(char32_t cp) {
    const Tables& t = tables();
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) return std::nullopt;
    return static_cast<unsigned char>(t.to_byte[cp]);
}

}  // namespace tps::tok
