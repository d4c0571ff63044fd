// The pre-tokenizers of the supported tokenizer.json files: Split (a regex or string, with the
// five delimiter behaviours and invert), ByteLevel, Metaspace, Digits, and a Sequence of them.
// Splitting follows tokenizers' NormalizedString::split exactly, empty matches included.
#pragma once

#include "components.h"
#include "regex.h"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tps::tok {

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
enum class PrependScheme { always, first, never };

// GPT-2's pre-tokenizer regex (ByteLevel with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(Regex pattern, SplitBehavior behavior, bool invert);
// add_prefix_space: a space before each piece that does not start with one; use_regex: split with
// kGpt2Pattern first. Then every byte becomes its byte-level code point.
std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex);
// Spaces become `replacement`, which is prepended as the scheme says, then (split) each
// replacement starts a new piece.
std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(std::string replacement, PrependScheme scheme,
                                                           bool split);
// Numeric characters (\p{N}) as pieces of their own (individual) or in runs.
std::unique_ptr<PreTokenizer> make_digits_pre_tokenizer(bool individual);
std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts);

}  // namespace tps::tok
