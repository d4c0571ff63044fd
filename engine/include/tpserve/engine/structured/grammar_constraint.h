// A grammar as a TokenConstraint: which tokens of a model's vocabulary may come next.
//
// Each step walks the grammar through every token's bytes at once: the vocabulary is sorted, so a
// token shares its first bytes' states with the one before it, and a prefix the grammar refuses
// rules out every token that starts with it. The mask of a grammar state is cached: inside a JSON
// string, say, the state after each character is the same, and so is the mask.
#pragma once

#include "tpserve/engine/structured/grammar.h"
#include "tpserve/engine/token_constraint.h"
#include "tpserve/engine/tokenizer.h"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tps::structured {

// A tokenizer's vocabulary as the bytes each token adds to a text (Tokenizer::token_bytes),
// sorted. Special tokens and tokens that add nothing are left out: no grammar admits them. Built
// once per model; immutable.
class TokenBytes {
public:
    explicit TokenBytes(const Tokenizer& tok);

    struct Entry {
        int32_t token = 0;
        uint32_t offset = 0;  // into bytes()
        uint32_t length = 0;
        uint32_t shared = 0;  // bytes in common with the entry before
    };
    const std::vector<Entry>& sorted() const { return sorted_; }
    std::string_view text(const Entry& e) const { return std::string_view(bytes_).substr(e.offset, e.length); }
    // The bytes of one token; empty for a token left out.
    std::string_view of(int32_t token) const;
    // A token that reads differently at the start of the output (a leading space dropped), and
    // what it reads there (Tokenizer::decode of it alone; empty: nothing).
    bool changes_at_start(int32_t token) const;
    std::string_view at_start(int32_t token) const;
    // The tokens that read differently at the start.
    const std::vector<int32_t>& start_tokens() const { return start_tokens_; }
    int32_t vocab_size() const { return vocab_size_; }

private:
    std::vector<Entry> sorted_;
    std::string bytes_;
    std::vector<int64_t> entry_of_;  // per token: its index in sorted_, or -1
    std::vector<int32_t> start_tokens_;
    std::unordered_map<int32_t, std::string> start_text_;
    int32_t vocab_size_ = 0;
};

// A grammar with a vocabulary and the stop tokens: the allowed tokens of each grammar state. One
// per request, shared by its choices; thread-safe.
//
// The walk is made cheap by remembering what it learns: each grammar state met gets a number, and
// each (state, byte) step its result, so the grammar's stacks are worked out once per step and
// not once per token (inside a JSON string every character leads back to the same state, and
// every token through it costs a table look-up per byte). Past kMaxStates states the memory
// starts over at the next mask; one mask that meets more than 4 x kMaxStates is an error.
class GrammarTokens {
public:
    GrammarTokens(std::shared_ptr<const CompiledGrammar> grammar, std::shared_ptr<const TokenBytes> vocab,
                  std::vector<int32_t> stop_ids);

    // The tokens that may follow `state`: those whose bytes it takes, and the stop tokens (only)
    // when the text is complete. `at_start`: nothing generated yet (a token that reads
    // differently there is taken as it reads there). The mask has a bit per token of the
    // vocabulary. UsageError past kMaxStacks or 4 x kMaxStates (a grammar too costly to follow).
    std::shared_ptr<const std::vector<uint64_t>> allowed(const GrammarState& state, bool at_start);
    const std::shared_ptr<const CompiledGrammar>& grammar() const { return grammar_; }
    const TokenBytes& vocab() const { return *vocab_; }
    bool is_stop(int32_t token) const;
    // What `token` adds to the text: its bytes, or its text at the start of the output.
    std::string_view text_of(int32_t token, bool at_start) const {
        return at_start && vocab_->changes_at_start(token) ? vocab_->at_start(token) : vocab_->of(token);
    }

    static constexpr size_t kCachedMasks = 64;
    static constexpr size_t kMaxStates = 20000;

private:
    int32_t intern(GrammarState state);               // the state's number
    int32_t step(int32_t state, unsigned char byte);  // the next state's number, or -1 (refused)
    std::shared_ptr<const std::vector<uint64_t>> compute(int32_t state, bool at_start);

    std::shared_ptr<const CompiledGrammar> grammar_;
    std::shared_ptr<const TokenBytes> vocab_;
    std::vector<int32_t> stop_ids_;
    std::mutex mutex_;
    std::vector<GrammarState> states_;
    std::unordered_map<std::string, int32_t> state_of_;  // a state's key() -> its number
    std::unordered_map<uint64_t, int32_t> steps_;        // state << 8 | byte -> next state or -1
    std::unordered_map<int64_t, std::shared_ptr<const std::vector<uint64_t>>> masks_;  // state * 2 + at_start
};

// The TokenConstraint of a grammar: a GrammarState following one sequence's tokens. `at_start`:
// the grammar's text is the start of the output (false when something comes before it, such as
// a reasoning model's thoughts: a token then reads as it does inside a text).
std::unique_ptr<TokenConstraint> make_grammar_constraint(std::shared_ptr<GrammarTokens> tokens, bool at_start = true);

// The grammar of `tokens` only after the text `end` (a reasoning model's "</think>"): every token
// may come until the output holds `end`, then the grammar follows from the next token. The token
// that completes `end` must end with it (one such as "</think>{" is not allowed), so the grammar's
// text is exactly what comes after `end`. A stop token before `end` ends the output, as always.
std::unique_ptr<TokenConstraint> make_grammar_after(std::string end, std::shared_ptr<GrammarTokens> tokens);

// The grammar of `tokens` each time the output comes to `trigger` (a tool call's opening tag):
// free text until then, the grammar's text from the next token, then free text again once it is
// complete (the trigger may come again; with `once`, the output ends there instead). The token
// that completes the trigger must end with it, as above. `after` (a reasoning model's "</think>";
// empty: none): the trigger counts only once the output holds that text. The output otherwise
// ends with a stop token, outside the grammar (within it, only where its text is complete).
std::unique_ptr<TokenConstraint> make_grammar_on(std::string trigger, std::shared_ptr<GrammarTokens> tokens, std::string after = {},
                                                 bool once = false);

}  // namespace tps::structured
