// NFD = full canonical decomposition + canonical ordering of combining marks; NFC = NFD followed
// by canonical composition (Unicode UAX #15). Text whose code points are all below U+0300 is
// already in NFC, which is the common case and returns at once.
#include "unicode_norm.h"

#include "utf8.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

namespace tps::tok {
namespace {

struct CccRange {
    char32_t first;
    char32_t last;
    uint8_t ccc;
};
struct Decomposition {
    char32_t cp;
    uint16_t offset;  // into kDecompositionPool
    uint8_t length;
};
struct Composition {
    char32_t first;
    char32_t second;
    char32_t composite;
};

#include "unicode_tables.inc"

// Hangul syllable arithmetic (Unicode chapter 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr char32_t kSCount = kLCount * kNCount;

uint8_t ccc(char32_t cp) {
    if (cp < 0x300) return 0;
    const auto it = std::upper_bound(std::begin(kCccRanges), std::end(kCccRanges), cp,
                                     [](char32_t c, const CccRange& r) { return c < r.first; });
    if (it == std::begin(kCccRanges)) return 0;
    const CccRange& r = *(it - 1);
    return cp <= r.last ? r.ccc : 0;
}

void decompose_into(char32_t cp, std::u32string& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        const char32_t s = cp - kSBase;
        out += kLBase + s / kNCount;
        out += kVBase + (s % kNCount) / kTCount;
        if (s % kTCount != 0) out += kTBase + s % kTCount;
        return;
    }
    if (cp >= 0xC0) {
        const auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                                         [](const Decomposition& d, char32_t c) { return d.cp < c; });
        if (it != std::end(kDecompositions) && it->cp == cp) {
            out.append(kDecompositionPool + it->offset, it->length);
            return;
        }
    }
    out += cp;
}

// Composite of a starter and the following character, or 0.
char32_t compose_pair(char32_t a, char32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    }
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
        b < kTBase + kTCount) {
        return a + (b - kTBase);
    }
    const auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{a, b},
                                     [](const Composition& c, const std::pair<char32_t, char32_t>& k) {
                                         return c.first != k.first ? c.first < k.first : c.second < k.second;
                                     });
    if (it != std::end(kCompositions) && it->first == a && it->second == b) return it->composite;
    return 0;
}

std::u32string decompose(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
        size_t n = 0;
        decompose_into(utf8_decode(s, i, &n), out);
        i += n;
    }
    // canonical ordering: a stable sort of each run of non-starters by combining class
    for (size_t i = 0; i < out.size();) {
        if (ccc(out[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < out.size() && ccc(out[j]) != 0) ++j;
        std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(i), out.begin() + static_cast<std::ptrdiff_t>(j),
                         [](char32_t x, char32_t y) { return ccc(x) < ccc(y); });
        i = j;
    }
    return out;
}

void compose(std::u32string& buf) {
    if (buf.empty()) return;
    size_t starter = 0;
    int last_class = ccc(buf[0]) == 0 ? 0 : 256;  // a leading combining mark blocks composition
    size_t write = 1;
    for (size_t read = 1; read < buf.size(); ++read) {
        const char32_t ch = buf[read];
        const int ch_class = ccc(ch);
        const char32_t composite = last_class == 256 ? 0 : compose_pair(buf[starter], ch);
        if (composite != 0 && (last_class < ch_class || last_class == 0)) {
            buf[starter] = composite;
            continue;
        }
        if (ch_class == 0) {
            starter = write;
            last_class = 0;
        } else {
            last_class = ch_class;
        }
        buf[write++] = ch;
    }
    buf.resize(write);
}

bool below_combining(std::string_view s) {
    // every code point below U+0300 is its own NFC form; U+0300 starts with the byte 0xCC
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0xCC; });
}

}  // namespace

std::string nfd(std::string_view s) {
    if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0xC3; })) {
        return std::string(s);  // below U+00C0 nothing decomposes
    }
    return u32_to_utf8(decompose(s));
}

std::string nfc(std::string_view s) {
    if (below_combining(s)) return std::string(s);
    std::u32string buf = decompose(s);
    compose(buf);
    return u32_to_utf8(buf);
}

}  // namespace tps::tok
