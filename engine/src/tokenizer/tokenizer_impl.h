// The inside of tps::Tokenizer, shared by the two loaders (tokenizer.json, GGUF) that build it
// and by tokenizer.cpp that runs it: the stages of tokenizers' pipeline, in order.
#pragma once

#include "tpserve/engine/tokenizer.h"

#include "added_vocab.h"
#include "components.h"

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tps {

struct Tokenizer::Impl {
    std::string origin;  // the file it came from, for messages
    std::unique_ptr<tok::Normalizer> normalizer;        // may be null
    std::unique_ptr<tok::PreTokenizer> pre_tokenizer;   // may be null
    std::unique_ptr<tok::Model> model;
    std::unique_ptr<tok::PostProcessor> post_processor;  // may be null
    std::unique_ptr<tok::Decoder> decoder;               // null: tokens joined with spaces
    tok::AddedVocabulary added;
    std::optional<int32_t> bos;
    std::optional<int32_t> eos;

    std::vector<int32_t> encode(std::string_view text, bool add_special) const;
    std::string decode(std::span<const int32_t> ids, bool skip_special) const;
    // The string of a token decode() would use, or null when decode() drops it (unknown id, or a
    // special token while skipping them).
    const std::string* kept_token(int32_t id, bool skip_special) const;
    // True when the last token decode() keeps is a <0xXX> byte token that a ByteFallback decoder
    // is still collecting (a later token may change the text of the whole run).
    bool ends_in_byte_run(std::span<const int32_t> ids, bool skip_special) const;
};

}  // namespace tps
