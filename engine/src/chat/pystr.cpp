// Python's str methods over UTF-8 (see pystr.h). Every routine walks code points, never bytes, so
// a multi-byte character is never cut and "length" means what len() means in Python.
#include "pystr.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps::chat::pystr {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// Decodes the code point at `pos`; returns it and advances `pos` past its bytes.
char32_t decode_at(std::string_view s, size_t& pos) {
    const auto b0 = static_cast<unsigned char>(s[pos]);
    if (b0 < 0x80) {
        ++pos;
        return b0;
    }
    int extra = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b0 & 0xE0) == 0xC0) {
        extra = 1, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
        extra = 2, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
        extra = 3, cp = b0 & 0x07, min = 0x10000;
    } else {
        ++pos;
        return kReplacement;
    }
    if (pos + static_cast<size_t>(extra) >= s.size()) {
        ++pos;
        return kReplacement;
    }
    for (int i = 1; i <= extra; ++i) {
        const auto b = static_cast<unsigned char>(s[pos + static_cast<size_t>(i)]);
        if ((b & 0xC0) != 0x80) {
            ++pos;
            return kReplacement;
        }
        cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        ++pos;
        return kReplacement;
    }
    pos += static_cast<size_t>(extra) + 1;
    return cp;
}

bool is_line_break(char32_t cp) {
    switch (cp) {
        case '\n': case '\r': case 0x0B: case 0x0C: case 0x1C: case 0x1D: case 0x1E:
        case 0x85: case 0x2028: case 0x2029:
            return true;
        default:
            return false;
    }
}

// Simple (one to one) case mappings of the scripts covered here: ASCII, Latin-1, Latin Extended-A,
// Greek, Cyrillic and fullwidth Latin. Upper-casing ß gives "SS" and lower-casing İ gives "i̇" as in
// Python; Python's final-sigma rule (Σ at a word's end lowers to ς) is not applied.
bool latin_a_odd_upper(char32_t c) { return (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E); }
bool latin_a_even_upper(char32_t c) {
    return (c >= 0x100 && c <= 0x137 && c != 0x130 && c != 0x131) || (c >= 0x14A && c <= 0x177);
}

char32_t upper_cp(char32_t c) {
    if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
    if (c == 0xB5) return 0x39C;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
    if (c == 0xFF) return 0x178;
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if (latin_a_odd_upper(c)) return c % 2 == 0 ? c - 1 : c;
    if (latin_a_even_upper(c)) return c % 2 == 1 ? c - 1 : c;
    if (c >= 0x3B1 && c <= 0x3C9) return c == 0x3C2 ? 0x3A3 : c - 32;
    if (c == 0x3AC) return 0x386;
    if (c >= 0x3AD && c <= 0x3AF) return c - 37;
    if (c == 0x3CC) return 0x38C;
    if (c == 0x3CD || c == 0x3CE) return c - 63;
    if (c >= 0x430 && c <= 0x44F) return c - 32;
    if (c >= 0x450 && c <= 0x45F) return c - 80;
    if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
    return c;
}

char32_t lower_cp(char32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
    if (c == 0x178) return 0xFF;
    if (latin_a_odd_upper(c)) return c % 2 == 1 ? c + 1 : c;
    if (latin_a_even_upper(c)) return c % 2 == 0 ? c + 1 : c;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
    if (c == 0x386) return 0x3AC;
    if (c >= 0x388 && c <= 0x38A) return c + 37;
    if (c == 0x38C) return 0x3CC;
    if (c == 0x38E || c == 0x38F) return c + 63;
    if (c >= 0x410 && c <= 0x42F) return c + 32;
    if (c >= 0x400 && c <= 0x40F) return c + 80;
    if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
    return c;
}

bool is_cased(char32_t c) { return c == 0xDF || upper_cp(c) != c || lower_cp(c) != c; }
bool is_lower_cp(char32_t c) { return c == 0xDF || (lower_cp(c) == c && upper_cp(c) != c); }
bool is_upper_cp(char32_t c) { return upper_cp(c) == c && lower_cp(c) != c; }

void append_upper(std::string& out, char32_t c) {
    if (c == 0xDF) {
        out += "SS";
    } else {
        append_utf8(out, upper_cp(c));
    }
}

void append_lower(std::string& out, char32_t c) {
    if (c == 0x130) {
        out += "i\xCC\x87";  // i + U+0307 COMBINING DOT ABOVE
    } else {
        append_utf8(out, lower_cp(c));
    }
}

void append_title(std::string& out, char32_t c) {  // str.title()'s first letter: ß is "Ss"
    if (c == 0xDF) {
        out += "Ss";
    } else {
        append_upper(out, c);
    }
}

// Python's str.isprintable() for the characters repr() escapes; unassigned code points are not
// known here and print as themselves.
bool is_printable(char32_t cp) {
    if (cp < 0x20 || cp == 0x7F) return false;
    if (cp >= 0x80 && cp <= 0xA0) return false;
    if (cp == 0xAD || cp == 0x61C || cp == 0x1680 || cp == 0x180E || cp == 0x3000 || cp == 0xFEFF) return false;
    if ((cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F)) {
        return false;
    }
    if ((cp >= 0xD800 && cp <= 0xF8FF) || (cp >= 0xFFF9 && cp <= 0xFFFB) || cp == 0xFFFE || cp == 0xFFFF) {
        return false;
    }
    if (cp == 0xE0001 || (cp >= 0xE0020 && cp <= 0xE007F) || cp >= 0xF0000) return false;
    return true;
}

template <class Fn>
void for_each_cp(std::string_view s, Fn&& fn) {
    size_t pos = 0;
    while (pos < s.size()) {
        const size_t start = pos;
        const char32_t cp = decode_at(s, pos);
        fn(cp, s.substr(start, pos - start));
    }
}

}  // namespace

bool valid_utf8(std::string_view text) {
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t start = pos;
        const char32_t cp = decode_at(text, pos);
        if (cp == kReplacement && text.substr(start, pos - start) != "\xEF\xBF\xBD") return false;
    }
    return true;
}

void append_utf8(std::string& out, char32_t cp) {
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

std::vector<std::string_view> code_points(std::string_view text) {
    std::vector<std::string_view> out;
    out.reserve(text.size());
    for_each_cp(text, [&](char32_t, std::string_view bytes) { out.push_back(bytes); });
    return out;
}

size_t length(std::string_view text) {
    size_t n = 0;
    for_each_cp(text, [&](char32_t, std::string_view) { ++n; });
    return n;
}

char32_t first_code_point(std::string_view text) {
    size_t pos = 0;
    return text.empty() ? kReplacement : decode_at(text, pos);
}

bool is_space(char32_t cp) {
    switch (cp) {
        case ' ': case '\t': case '\n': case '\r': case 0x0B: case 0x0C:
        case 0x1C: case 0x1D: case 0x1E: case 0x1F: case 0x85: case 0xA0: case 0x1680:
        case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
            return true;
        default:
            return cp >= 0x2000 && cp <= 0x200A;
    }
}

size_t space_run(std::string_view text, size_t pos) {
    size_t end = pos;
    while (end < text.size()) {
        size_t next = end;
        if (!is_space(decode_at(text, next))) break;
        end = next;
    }
    return end - pos;
}

std::string strip(std::string_view text, std::optional<std::string_view> chars, bool left, bool right) {
    std::vector<char32_t> set;
    if (chars) for_each_cp(*chars, [&](char32_t cp, std::string_view) { set.push_back(cp); });
    const auto strippable = [&](char32_t cp) {
        return chars ? std::find(set.begin(), set.end(), cp) != set.end() : is_space(cp);
    };
    size_t begin = 0;
    size_t end = text.size();
    bool in_prefix = true;
    for_each_cp(text, [&](char32_t cp, std::string_view bytes) {
        const size_t offset = static_cast<size_t>(bytes.data() - text.data());
        if (strippable(cp)) {
            if (in_prefix && left) begin = offset + bytes.size();
        } else {
            in_prefix = false;
            if (right) end = offset + bytes.size();
        }
    });
    if (in_prefix) return left || right ? std::string() : std::string(text);  // all strippable
    if (!right) end = text.size();
    return std::string(text.substr(begin, end - begin));
}

std::vector<std::string> split(std::string_view text, std::optional<std::string_view> sep, int64_t maxsplit) {
    std::vector<std::string> parts;
    if (sep) {
        size_t start = 0;
        while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
            const size_t at = text.find(*sep, start);
            if (at == std::string_view::npos) break;
            parts.emplace_back(text.substr(start, at - start));
            start = at + sep->size();
        }
        parts.emplace_back(text.substr(start));
        return parts;
    }
    size_t pos = 0;
    while (true) {
        pos += space_run(text, pos);
        if (pos >= text.size()) break;
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
            parts.push_back(strip(text.substr(pos), std::nullopt, false, true));
            break;
        }
        size_t end = pos;
        while (end < text.size()) {
            size_t next = end;
            if (is_space(decode_at(text, next))) break;
            end = next;
        }
        parts.emplace_back(text.substr(pos, end - pos));
        pos = end;
    }
    return parts;
}

std::vector<std::string> splitlines(std::string_view text) {
    std::vector<std::string> lines;
    size_t start = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t at = pos;
        const char32_t cp = decode_at(text, pos);
        if (!is_line_break(cp)) continue;
        lines.emplace_back(text.substr(start, at - start));
        if (cp == '\r' && pos < text.size() && text[pos] == '\n') ++pos;
        start = pos;
    }
    if (start < text.size()) lines.emplace_back(text.substr(start));
    return lines;
}

std::string replace(std::string_view text, std::string_view old, std::string_view repl, int64_t count) {
    std::string out;
    int64_t done = 0;
    if (old.empty()) {  // Python inserts `repl` before every code point and at the end
        for (const auto cp : code_points(text)) {
            if (count < 0 || done < count) out += repl, ++done;
            out += cp;
        }
        if (count < 0 || done < count) out += repl;
        return out;
    }
    size_t start = 0;
    while (count < 0 || done < count) {
        const size_t at = text.find(old, start);
        if (at == std::string_view::npos) break;
        out += text.substr(start, at - start);
        out += repl;
        start = at + old.size();
        ++done;
    }
    out += text.substr(start);
    return out;
}

std::string upper(std::string_view text) {
    std::string out;
    for_each_cp(text, [&](char32_t cp, std::string_view) { append_upper(out, cp); });
    return out;
}

std::string lower(std::string_view text) {
    std::string out;
    for_each_cp(text, [&](char32_t cp, std::string_view) { append_lower(out, cp); });
    return out;
}

std::string capitalize(std::string_view text) {
    std::string out;
    bool first = true;
    for_each_cp(text, [&](char32_t cp, std::string_view) {
        if (first) {
            append_title(out, cp);
        } else {
            append_lower(out, cp);
        }
        first = false;
    });
    return out;
}

std::string title(std::string_view text) {
    // A cased letter after a cased letter is lowered, any other raised.
    std::string out;
    bool previous_cased = false;
    for_each_cp(text, [&](char32_t cp, std::string_view) {
        if (previous_cased) {
            append_lower(out, cp);
        } else {
            append_title(out, cp);
        }
        previous_cased = is_cased(cp);
    });
    return out;
}

std::string jinja_title(std::string_view text) {
    // jinja2: word[0].upper() + word[1:].lower() for the words between runs of - ( { [ < and spaces.
    std::string out;
    bool word_start = true;
    for_each_cp(text, [&](char32_t cp, std::string_view) {
        if (cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || is_space(cp)) {
            append_utf8(out, cp);
            word_start = true;
        } else {
            if (word_start) {
                append_upper(out, cp);
            } else {
                append_lower(out, cp);
            }
            word_start = false;
        }
    });
    return out;
}

bool is_lower(std::string_view text) {
    bool cased = false;
    bool all_lower = true;
    for_each_cp(text, [&](char32_t cp, std::string_view) {
        if (is_upper_cp(cp)) all_lower = false;
        cased = cased || is_lower_cp(cp);
    });
    return cased && all_lower;
}

bool is_upper(std::string_view text) {
    bool cased = false;
    bool all_upper = true;
    for_each_cp(text, [&](char32_t cp, std::string_view) {
        if (is_lower_cp(cp)) all_upper = false;
        cased = cased || is_upper_cp(cp);
    });
    return cased && all_upper;
}

std::string repr(std::string_view text) {
    const bool has_single = text.find('\'') != std::string_view::npos;
    const bool has_double = text.find('"') != std::string_view::npos;
    const char quote = has_single && !has_double ? '"' : '\'';
    std::string out(1, quote);
    for_each_cp(text, [&](char32_t cp, std::string_view bytes) {
        if (cp == static_cast<char32_t>(quote) || cp == '\\') {
            out += '\\';
            out += static_cast<char>(cp);
        } else if (cp == '\t') {
            out += "\\t";
        } else if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\r') {
            out += "\\r";
        } else if (is_printable(cp)) {
            out += bytes;
        } else if (cp <= 0xFF) {
            out += fmt::format("\\x{:02x}", static_cast<uint32_t>(cp));
        } else if (cp <= 0xFFFF) {
            out += fmt::format("\\u{:04x}", static_cast<uint32_t>(cp));
        } else {
            out += fmt::format("\\U{:08x}", static_cast<uint32_t>(cp));
        }
    });
    out += quote;
    return out;
}

}  // namespace tps::chat::pystr
