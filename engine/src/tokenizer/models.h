// The two subword models: BPE as Hugging Face tokenizers runs it (merge ranks, byte fallback to
// <0xXX>, unk fusing, ignore_merges), and llama.cpp's SentencePiece merge by token score, which a
// GGUF file with tokenizer.ggml.model "llama" carries instead of merges.
#pragma once

#include "components.h"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::tok {

struct BpeOptions {
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;  // a word that is a whole vocabulary entry is not merged (Llama 3)
};

// Errors: InputError (naming `origin`) when a merge names a token, or makes one, that is not in
// the vocabulary.
std::unique_ptr<Model> make_bpe_model(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                                      BpeOptions options, std::string_view origin);

// scores[id]: the piece's score; the adjacent pair whose concatenation is the highest-scoring
// vocabulary entry merges first. Characters left without a token become their <0xXX> byte
// tokens, or `unk` when those are missing.
std::unique_ptr<Model> make_spm_model(Vocab vocab, std::vector<float> scores, std::optional<int32_t> unk,
                                      std::string_view origin);

}  // namespace tps::tok
