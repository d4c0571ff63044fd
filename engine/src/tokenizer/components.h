// The stages of a tokenizer, each a small interface with one implementation per tokenizer.json
// component type: Normalizer (text -> text), PreTokenizer (pieces -> smaller pieces), Model (one
// word -> ids), PostProcessor (adds BOS/EOS), Decoder (token strings -> text). Pieces carry no
// offsets: only whether they start the input, which is all that Metaspace's "first" scheme needs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tps::tok {

// A stretch of the input on its way through normalization and pre-tokenization.
struct Piece {
    std::string text;
    bool at_start = false;  // begins at offset 0 of the original text
    int32_t token = -1;     // >= 0: an added token already recognised, passed through untouched
};

class Normalizer {
public:
    virtual ~Normalizer() = default;
    virtual std::string normalize(std::string s) const = 0;
};

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    // Splits and rewrites the pieces whose token is < 0; empty pieces are dropped.
    virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// String <-> id map of a model's vocabulary (ids may have holes).
class Vocab {
public:
    // Errors: InputError when the id is negative or already taken.
    void add(std::string token, int32_t id, std::string_view origin);
    std::optional<int32_t> find(std::string_view token) const {
        const auto it = ids_.find(token);
        return it == ids_.end() ? std::nullopt : std::optional<int32_t>(it->second);
    }
    const std::string* text(int32_t id) const {
        return id >= 0 && static_cast<size_t>(id) < present_.size() && present_[static_cast<size_t>(id)]
                   ? &tokens_[static_cast<size_t>(id)]
                   : nullptr;
    }
    int32_t end_id() const { return static_cast<int32_t>(tokens_.size()); }  // one past the largest id
    size_t size() const { return ids_.size(); }

private:
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> ids_;
    std::vector<std::string> tokens_;
    std::vector<bool> present_;
};

class Model {
public:
    virtual ~Model() = default;
    // Appends the ids of one pre-tokenized word (non-empty, valid UTF-8).
    virtual void tokenize(std::string_view word, std::vector<int32_t>& out) const = 0;
    const Vocab& vocab() const { return vocab_; }

protected:
    Vocab vocab_;
};

class PostProcessor {
public:
    virtual ~PostProcessor() = default;
    // ids: the encoded sequence; adds the special tokens when add_special.
    virtual void process(std::vector<int32_t>& ids, bool add_special) const = 0;
    // The first special token prepended to a single sequence, if any (the BOS).
    virtual std::optional<int32_t> leading_special() const { return std::nullopt; }
};

class Decoder {
public:
    virtual ~Decoder() = default;
    // tokenizers' decode_chain: rewrites the list of token strings.
    virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
    // decode_chain for tokens in the middle of a text: the raw bytes (no UTF-8 repair) and nothing
    // stripped from the start of the text (Strip is taken to act on the whole text, after Fuse, as
    // in every tokenizer.json seen; Metaspace drops no first space).
    virtual void decode_inside(std::vector<std::string>& tokens) const { decode_chain(tokens); }
    // True when a trailing <0xXX> token may still change what the text before it decodes to.
    virtual bool has_byte_fallback() const { return false; }
};

}  // namespace tps::tok
