// What the grammar tests share: matching a whole text, printing bytes, and the random strings
// (walks along the grammar, one-byte mutations) that the tests hold against std::regex.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace tps::structured::testing_support {

inline bool matches(const std::shared_ptr<const CompiledGrammar>& grammar, std::string_view text) {
    GrammarState s(grammar);
    return s.advance(text) && s.complete();
}

// The text with control characters spelled out, for failure messages.
inline std::string printable(std::string_view text) {
    std::string out;
    for (const char c : text) {
        const auto b = static_cast<unsigned char>(c);
        if (b >= 0x20 && b < 0x7F) {
            out += c;
        } else {
            static constexpr char kHex[] = "0123456789abcdef";
            out += "\\x";
            out += kHex[b >> 4];
            out += kHex[b & 15];
        }
    }
    return out;
}

// A string the grammar's state admits byte by byte, from the alphabet where it can (any other
// ASCII byte but those in `avoid` otherwise); it may stop short of a match.
inline std::string walk(const std::shared_ptr<const CompiledGrammar>& grammar, const std::string& alphabet, std::mt19937& rng,
                        std::string_view avoid = {}) {
    GrammarState s(grammar);
    std::string out;
    for (int step = 0; step < 24; ++step) {
        if (s.complete() && (!s.can_continue() || rng() % 4 == 0)) break;
        const ByteSet next = s.next_bytes();
        std::vector<char> options;
        for (const char c : alphabet) {
            if (next.has(static_cast<unsigned char>(c))) options.push_back(c);
        }
        for (int b = 0; b < 0x7F && options.empty(); ++b) {
            const auto c = static_cast<char>(b);
            if (next.has(static_cast<unsigned char>(b)) && avoid.find(c) == std::string_view::npos) options.push_back(c);
        }
        if (options.empty()) break;
        const char c = options[rng() % options.size()];
        out += c;
        s = s.advanced(static_cast<unsigned char>(c));
    }
    return out;
}

// One random edit of `text`: a byte deleted, inserted or replaced.
inline std::string mutate(std::string text, const std::string& alphabet, std::mt19937& rng) {
    const char c = alphabet[rng() % alphabet.size()];
    const size_t at = text.empty() ? 0 : rng() % text.size();
    switch (text.empty() ? 1 : rng() % 3) {
        case 0: text.erase(at, 1); break;
        case 1: text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c); break;
        default: text[at] = c; break;
    }
    return text;
}

}  // namespace tps::structured::testing_support
