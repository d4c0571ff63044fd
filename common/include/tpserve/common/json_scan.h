// Reading the shape of JSON text before (or instead of) parsing it: brackets outside strings.
// Request bodies, schemas sent as text and model output are not trusted to be shallow, and a
// model's tool call must be cut from the text after it.
#pragma once

#include <cstddef>
#include <string_view>

namespace tps {

// Walks `text` bracket by bracket outside strings (escapes respected). `step(depth_after, c)` is
// called for each bracket; it returns true to stop there. Returns where it stopped, or npos.
template <class Step>
size_t scan_brackets(std::string_view text, Step step) {
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{' || c == ']' || c == '}') {
            depth += (c == '[' || c == '{') ? 1 : -1;
            if (step(depth, c)) return i;
        }
    }
    return std::string_view::npos;
}

// Whether brackets nest deeper than `limit` anywhere in `text`.
inline bool nests_deeper_than(std::string_view text, int limit) {
    return scan_brackets(text, [&](int depth, char) { return depth > limit; }) != std::string_view::npos;
}

// The end (one past the closing bracket) of the object or array that begins `text`; npos when it
// does not close.
inline size_t value_end(std::string_view text) {
    const size_t close = scan_brackets(text, [](int depth, char) { return depth == 0; });
    return close == std::string_view::npos ? close : close + 1;
}

}  // namespace tps
