// GPT-2's byte-level alphabet: each of the 256 byte values is shown as one printable code point
// (printable Latin-1 bytes as themselves, the rest shifted to U+0100...), so byte-level BPE
// vocabularies are plain strings. Used by the ByteLevel pre-tokenizer and decoder.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tps::tok {

// The code point of byte b, as UTF-8.
std::string_view byte_to_unicode(unsigned char b);

// s's bytes, each as its code point.
std::string bytes_to_unicode(std::string_view s);

// The byte that code point cp stands for, if any.
std::optional<unsigned char> unicode_to_byte(char32_t cp);

}  // namespace tps::tok
