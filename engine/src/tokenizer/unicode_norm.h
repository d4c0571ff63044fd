// Canonical Unicode normalization (NFD, NFC) for the NFC/NFD normalizers (Qwen2 uses NFC). The
// data are generated from Python's unicodedata into unicode_tables.inc (gen_unicode_tables.py);
// Hangul syllables are handled algorithmically. Input must be valid UTF-8.
#pragma once

#include <string>
#include <string_view>

namespace tps::tok {

std::string nfd(std::string_view s);
std::string nfc(std::string_view s);

}  // namespace tps::tok
