// The tail of streamed text that may be the start of a tag, held back until the next piece says.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string_view>

namespace tps::serve {

// The length of the longest tail of `text` that is a proper start of `tag`.
inline size_t partial_tag(std::string_view text, std::string_view tag) {
    for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
        if (text.ends_with(tag.substr(0, n))) return n;
    }
    return 0;
}

}  // namespace tps::serve
