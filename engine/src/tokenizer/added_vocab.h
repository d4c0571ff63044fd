// Added tokens (tokenizer.json "added_tokens", GGUF control and user-defined tokens): found in
// the input before pre-tokenization, as tokenizers' AddedVocabulary does. Tokens with
// normalized=false are matched in the raw text, the others in the normalized pieces; matching is
// leftmost-longest, then the single_word / lstrip / rstrip flags are applied to each match.
#pragma once

#include "components.h"

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace tps::tok {

struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool special = false;
    bool normalized = true;
    bool lstrip = false;
    bool rstrip = false;
    bool single_word = false;
    // The token's string in decode() and token_text(): the content, normalized when `normalized`
    // (tokenizers keeps a normalized added token in its normalized form). Set by build().
    std::string text;
};

// Byte trie answering "the longest key that starts here".
class TokenTrie {
public:
    void insert(std::string_view key, int32_t value);
    bool empty() const { return nodes_.size() <= 1; }
    // (length, value) of the longest key at s[i], or length 0.
    std::pair<size_t, int32_t> longest_at(std::string_view s, size_t i) const;

private:
    struct Node {
        std::vector<std::pair<unsigned char, int32_t>> next;
        int32_t value = -1;
    };
    std::vector<Node> nodes_{1};
    std::array<bool, 256> first_{};
};

class AddedVocabulary {
public:
    // Errors: InputError when the content is empty or is taken by another id.
    void add(AddedToken token, std::string_view origin);
    // Builds the matchers; normalized tokens are matched in their normalized form.
    void build(const Normalizer* normalizer);

    // The extraction of tokenizers' encode: raw-text tokens first, then each remaining piece is
    // normalized and searched for the normalized tokens.
    void extract(std::vector<Piece>& pieces, const Normalizer* normalizer) const;

    const AddedToken* by_id(int32_t id) const;
    std::optional<int32_t> id_of(std::string_view content) const;
    bool is_special_content(std::string_view content) const { return special_.find(content) != special_.end(); }
    const std::vector<AddedToken>& tokens() const { return tokens_; }
    int32_t end_id() const;  // one past the largest id

private:
    void split(std::vector<Piece>& pieces, const TokenTrie& trie) const;

    std::vector<AddedToken> tokens_;
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<int32_t, size_t> by_id_;
    std::unordered_map<std::string, size_t, Hash, std::equal_to<>> by_content_;
    std::unordered_set<std::string, Hash, std::equal_to<>> special_;
    TokenTrie raw_, normalized_;  // values: indexes into tokens_
};

}  // namespace tps::tok
