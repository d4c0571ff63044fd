// Decoders (token strings -> text) of the supported tokenizer.json files: ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace and a Sequence of them, each as tokenizers' decode_chain.
#pragma once

#include "components.h"
#include "regex.h"

#include <memory>
#include <string>
#include <vector>

namespace tps::tok {

std::unique_ptr<Decoder> make_byte_level_decoder();
std::unique_ptr<Decoder> make_replace_decoder(Regex pattern, std::string content);
std::unique_ptr<Decoder> make_byte_fallback_decoder();
std::unique_ptr<Decoder> make_fuse_decoder();
// Removes up to `start` leading and `stop` trailing `content` characters of each token.
std::unique_ptr<Decoder> make_strip_decoder(char32_t content, size_t start, size_t stop);
// `replacement` becomes a space, except in the first token when drop_first (prepend scheme not
// "never"), where it is removed.
std::unique_ptr<Decoder> make_metaspace_decoder(char32_t replacement, bool drop_first);
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> parts);

}  // namespace tps::tok
