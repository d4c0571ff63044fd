// Tokenizer: byte-level BPE (GPT-2 style: Llama 3, Qwen2, SmolLM2) and SentencePiece-style BPE
// with byte fallback (Llama 2, Mistral), read from an HF tokenizer.json (+ tokenizer_config.json)
// or from GGUF metadata. Token ids and decoded text equal the Hugging Face `tokenizers` library's.
// Pre-tokenizer regular expressions run on PCRE2 (Unicode properties), not a hand-written
// character classifier. Invalid UTF-8 in the input is first repaired: each maximal ill-formed
// sequence becomes U+FFFD, as Python's bytes.decode('utf-8', errors='replace') does.
//
// tokenizer.json components read (anything else is an InputError naming it):
//   model          BPE (merges as "a b" or ["a", "b"]; byte_fallback, fuse_unk, unk_token,
//                  ignore_merges, continuing_subword_prefix, end_of_word_suffix; no dropout)
//   normalizer     Sequence, NFC, NFD, Prepend, Replace (String / Regex), Strip
//   pre_tokenizer  Sequence, Split (String / Regex; Removed, Isolated, MergedWithPrevious,
//                  MergedWithNext, Contiguous; invert), ByteLevel, Metaspace, Digits
//   post_processor Sequence, TemplateProcessing (single), ByteLevel
//   decoder        Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace
//   added_tokens   special, normalized, lstrip, rstrip, single_word
// "truncation" and "padding" are ignored.
#pragma once

#include "tpserve/partition/gguf.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

// Immutable once loaded: encode/decode and the look-ups may be called from several threads.
class Tokenizer {
public:
    // DIR/tokenizer.json, with DIR/tokenizer_config.json when present. tokenizer.json alone decides
    // the ids (as tokenizers' Tokenizer.from_file does); the config names the BOS and EOS tokens
    // (bos_token, eos_token). chat_template is read elsewhere. An unsupported component is an
    // error, never a silent approximation. Errors: tps::InputError naming the file.
    static Tokenizer from_hf_dir(const std::filesystem::path& dir);
    static Tokenizer from_hf_json(const std::filesystem::path& tokenizer_json,
                                  const std::filesystem::path& tokenizer_config = {});
    // tokenizer.ggml.* metadata (model gpt2 or llama; tokens, merges, scores, token_type, pre).
    // gpt2: the pre-tokenizer regexes llama.cpp uses for `pre` (unknown names are an error);
    // llama: llama.cpp's SentencePiece merge by score. Decoding is that of the family's
    // tokenizer.json (ByteLevel; or Replace "▁" + ByteFallback + Fuse + Strip).
    static Tokenizer from_gguf(const GgufFile& file);

    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;
    ~Tokenizer();

    // add_special: add what the tokenizer's post-processor adds (e.g. BOS), as
    // tokenizers' encode(text, add_special_tokens=True) does. Special/added tokens written in the
    // text are recognised as tokens.
    std::vector<int32_t> encode(std::string_view text, bool add_special = true) const;
    // As tokenizers' decode(ids, skip_special_tokens=skip_special). Ids outside the vocabulary are
    // dropped, as tokenizers does; bytes that are not valid UTF-8 come out as U+FFFD.
    std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

    int32_t vocab_size() const;
    std::optional<int32_t> token_id(std::string_view token) const;  // exact vocabulary / added token
    // The raw vocabulary string (tokenizers' id_to_token: a normalized added token in its normalized
    // form). Errors: InputError for an id outside the vocabulary.
    std::string_view token_text(int32_t id) const;
    bool is_special(int32_t id) const;
    // The bytes a token adds in the middle of a text, as structured output follows it: raw (a
    // token may end inside a UTF-8 character) and with no leading space stripped. Null for a
    // special token or an id with no string.
    std::optional<std::string> token_bytes(int32_t id) const;
    // Whether a text that starts with this token decodes to other bytes than token_bytes() (the
    // leading space a Strip or Metaspace decoder drops at the start of a text).
    bool token_changes_at_start(int32_t id) const;
    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;

    struct Impl;  // tokenizer_impl.h (engine/src/tokenizer)

private:
    friend class StreamDecoder;
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Turns a growing list of token ids into text pieces for streaming: push() returns the new text
// that is complete (never half a UTF-8 character, never text that a later token would change,
// such as a <0xXX> byte run still open or a leading space a decoder strips). The pieces joined
// equal decode() of all the ids. Each push decodes only a short window, not the whole history.
class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
    // The text to come follows these tokens, already shown (an echoed prompt): it keeps the
    // leading space a decoder strips at the start of a text. Where the last of them is part of a
    // byte run, the text starts afresh.
    void follow(std::span<const int32_t> shown);
    std::string push(int32_t id);
    std::string finish();  // whatever is left (invalid bytes as U+FFFD, as decode() would); resets

private:
    const Tokenizer& tok_;
    bool skip_special_;
    std::vector<int32_t> ids_;  // the window: one context token already emitted, then pending ones
    std::string prefix_;        // decode() of the context token within the window
};

}  // namespace tps
