#include "tpserve/engine/structured/grammar_constraint.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <numeric>

namespace tps::structured {

TokenBytes::TokenBytes(const Tokenizer& tok) : vocab_size_(tok.vocab_size()) {
    entry_of_.assign(static_cast<size_t>(vocab_size_), -1);
    std::vector<Entry> entries;
    for (int32_t t = 0; t < vocab_size_; ++t) {
        const std::optional<std::string> b = tok.token_bytes(t);
        if (!b || b->empty()) continue;
        entries.push_back({t, static_cast<uint32_t>(bytes_.size()), static_cast<uint32_t>(b->size()), 0});
        bytes_ += *b;
        if (tok.token_changes_at_start(t)) {
            const int32_t one[] = {t};
            start_tokens_.push_back(t);
            start_text_.emplace(t, tok.decode(one, true));
        }
    }
    std::sort(entries.begin(), entries.end(), [&](const Entry& a, const Entry& b) {
        const int c = text(a).compare(text(b));
        return c < 0 || (c == 0 && a.token < b.token);
    });
    for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) {
            const std::string_view a = text(entries[i - 1]), b = text(entries[i]);
            const auto mismatch = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
            entries[i].shared = static_cast<uint32_t>(mismatch.first - a.begin());
        }
        entry_of_[static_cast<size_t>(entries[i].token)] = static_cast<int64_t>(i);
    }
    sorted_ = std::move(entries);
}

std::string_view TokenBytes::of(int32_t token) const {
    if (token < 0 || token >= vocab_size_ || entry_of_[static_cast<size_t>(token)] < 0) return {};
    return text(sorted_[static_cast<size_t>(entry_of_[static_cast<size_t>(token)])]);
}

bool TokenBytes::changes_at_start(int32_t token) const { return start_text_.contains(token); }

std::string_view TokenBytes::at_start(int32_t token) const {
    const auto it = start_text_.find(token);
    return it == start_text_.end() ? std::string_view() : std::string_view(it->second);
}

GrammarTokens::GrammarTokens(std::shared_ptr<const CompiledGrammar> grammar, std::shared_ptr<const TokenBytes> vocab,
                             std::vector<int32_t> stop_ids)
    : grammar_(std::move(grammar)), vocab_(std::move(vocab)), stop_ids_(std::move(stop_ids)) {
    TPS_CHECK(grammar_ && vocab_, "a grammar constraint needs a grammar and a vocabulary");
}

bool GrammarTokens::is_stop(int32_t token) const {
    return std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end();
}

std::shared_ptr<const std::vector<uint64_t>> GrammarTokens::allowed(const GrammarState& state, bool at_start) {
    const std::lock_guard lock(mutex_);
    if (states_.size() > kMaxStates) {
        states_.clear();
        state_of_.clear();
        steps_.clear();
        masks_.clear();
    }
    const int32_t id = intern(state);
    const int64_t key = int64_t{id} * 2 + (at_start ? 1 : 0);
    if (const auto it = masks_.find(key); it != masks_.end()) return it->second;
    auto mask = compute(id, at_start);
    if (masks_.size() >= kCachedMasks) masks_.clear();  // a new phase of the text: start over
    masks_.emplace(key, mask);
    return mask;
}

int32_t GrammarTokens::intern(GrammarState state) {
    const std::vector<uint32_t>& key = state.key();
    std::string k(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(uint32_t));
    const auto [it, added] = state_of_.emplace(std::move(k), static_cast<int32_t>(states_.size()));
    if (added) states_.push_back(std::move(state));
    return it->second;
}

int32_t GrammarTokens::step(int32_t state, unsigned char byte) {
    const uint64_t key = static_cast<uint64_t>(state) << 8 | byte;
    if (const auto it = steps_.find(key); it != steps_.end()) return it->second;
    TPS_CHECK_AS(UsageError, states_.size() < 4 * kMaxStates,
                 "structured output: the grammar has more than {} states within one step's reach", 4 * kMaxStates);
    GrammarState next = states_[static_cast<size_t>(state)].advanced(byte);
    const int32_t id = next.dead() ? -1 : intern(std::move(next));
    steps_.emplace(key, id);
    return id;
}

std::shared_ptr<const std::vector<uint64_t>> GrammarTokens::compute(int32_t state, bool at_start) {
    auto mask = std::make_shared<std::vector<uint64_t>>((static_cast<size_t>(vocab_->vocab_size()) + 63) / 64, 0);
    auto set = [&](int32_t t) { (*mask)[static_cast<size_t>(t) / 64] |= uint64_t{1} << (t % 64); };
    const GrammarState& start = states_[static_cast<size_t>(state)];
    if (start.complete()) {
        for (const int32_t t : stop_ids_) {
            if (t >= 0 && t < vocab_->vocab_size()) set(t);
        }
    }
    if (!start.can_continue()) return mask;
    // path[k]: the state after the first k bytes of the current entry, for k < path.size()
    std::vector<int32_t> path{state};
    size_t dead_at = SIZE_MAX;  // a prefix of this many bytes (shared with the entry before) is refused
    for (const TokenBytes::Entry& e : vocab_->sorted()) {
        if (e.shared >= dead_at) continue;
        dead_at = SIZE_MAX;
        path.resize(std::min<size_t>(path.size(), e.shared + 1));
        if (is_stop(e.token)) continue;  // (a stop token ends the text; it is never part of it)
        const std::string_view text = vocab_->text(e);
        bool alive = true;
        for (size_t k = path.size() - 1; k < text.size(); ++k) {
            const int32_t next = step(path[k], static_cast<unsigned char>(text[k]));
            if (next < 0) {
                dead_at = k + 1;
                alive = false;
                break;
            }
            path.push_back(next);
        }
        if (alive && !(at_start && vocab_->changes_at_start(e.token))) set(e.token);
    }
    if (at_start) {
        // the tokens that read differently at the start, as they read there
        for (const int32_t t : vocab_->start_tokens()) {
            const std::string_view text = vocab_->at_start(t);
            int32_t at = state;
            for (size_t k = 0; k < text.size() && at >= 0; ++k) at = step(at, static_cast<unsigned char>(text[k]));
            if (!text.empty() && at >= 0 && !is_stop(t)) set(t);
        }
    }
    return mask;
}

namespace {

class GrammarConstraint final : public TokenConstraint {
public:
    GrammarConstraint(std::shared_ptr<GrammarTokens> tokens, bool at_start)
        : tokens_(std::move(tokens)), state_(tokens_->grammar()), starts_at_start_(at_start), at_start_(at_start) {}

    std::unique_ptr<TokenConstraint> restart() const override {
        return std::make_unique<GrammarConstraint>(tokens_, starts_at_start_);
    }

    const std::vector<uint64_t>& allowed() override {
        try {
            mask_ = tokens_->allowed(state_, at_start_);
        } catch (const UsageError& e) {
            throw ConstraintError(e.what());  // this request's grammar is too costly: it fails alone
        } catch (const std::bad_alloc&) {
            throw ConstraintError("structured output: out of memory following the grammar");
        }
        const bool any = std::any_of(mask_->begin(), mask_->end(), [](uint64_t w) { return w != 0; });
        TPS_CHECK_AS(ConstraintError, any, "structured output: no token of the vocabulary can continue the text here (the grammar needs one of "
                       "the bytes {} next)",
                  describe(state_.next_bytes()));
        return *mask_;
    }

    void accept(int32_t token) override {
        TPS_CHECK_AS(ConstraintError, !ended_, "structured output: token {} after the end of the text", token);
        if (tokens_->is_stop(token)) {
            TPS_CHECK_AS(ConstraintError, state_.complete(), "structured output: the stop token {} came before the text was complete", token);
            ended_ = true;
            return;
        }
        const std::string_view bytes = tokens_->text_of(token, at_start_);
        TPS_CHECK_AS(ConstraintError, !bytes.empty(), "structured output: token {} cannot be part of the text", token);
        GrammarState next = state_;
        bool fits = false;
        try {
            fits = next.advance(bytes);
        } catch (const UsageError& e) {
            throw ConstraintError(e.what());
        }
        TPS_CHECK_AS(ConstraintError, fits, "structured output: token {} does not fit the grammar here", token);
        state_ = std::move(next);
        at_start_ = false;
    }

    bool finished() const override { return ended_ || !state_.can_continue(); }

private:
    static std::string describe(const ByteSet& set) {
        std::string out;
        for (unsigned c = 0; c < 256 && out.size() < 40; ++c) {
            if (!set.has(static_cast<unsigned char>(c))) continue;
            out += c >= 0x20 && c < 0x7F ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02X}", c);
        }
        return out.empty() ? "(none)" : out;
    }

    std::shared_ptr<GrammarTokens> tokens_;
    GrammarState state_;
    bool starts_at_start_ = true;
    bool at_start_ = true;
    bool ended_ = false;
    std::shared_ptr<const std::vector<uint64_t>> mask_;
};

// What the sequences of a grammar after a text share: per k, the tokens that may come when the
// output ends with the first k bytes of `end` (all but those that would complete it and go on);
// and every token (before the text is looked for at all).
struct AfterMasks {
    std::string end;
    std::vector<std::vector<uint64_t>> free;
    std::vector<uint64_t> all;
};

std::shared_ptr<const AfterMasks> after_masks(std::string end, const TokenBytes& vocab) {
    auto m = std::make_shared<AfterMasks>();
    const auto n = static_cast<size_t>(vocab.vocab_size());
    m->all.assign((n + 63) / 64, ~uint64_t{0});
    if (n % 64) m->all.back() = (uint64_t{1} << (n % 64)) - 1;
    m->free.assign(end.size(), m->all);
    for (const TokenBytes::Entry& e : vocab.sorted()) {
        const std::string_view bytes = vocab.text(e);
        if (bytes.find(end.back()) == std::string_view::npos) continue;  // cannot complete it
        for (size_t k = 0; k < end.size(); ++k) {
            std::string text = end.substr(0, k);
            text += bytes;
            const size_t at = text.find(end);
            if (at != std::string::npos && at + end.size() < text.size()) {
                m->free[k][static_cast<size_t>(e.token) / 64] &= ~(uint64_t{1} << (e.token % 64));
            }
        }
    }
    m->end = std::move(end);
    return m;
}

// Where a text shows up in the output, token by token: how much of it the output ends with.
struct Watch {
    std::string_view text;
    size_t held = 0;  // the output ends with the first `held` bytes of `text`

    // The token's bytes added (none: a special token, which breaks the text off). Returns where
    // the text ended within `bytes` (one past), or npos while it has not come.
    size_t feed(std::string_view bytes) {
        if (bytes.empty()) {
            held = 0;
            return std::string_view::npos;
        }
        std::string seen(text.substr(0, held));
        seen += bytes;
        if (const size_t at = seen.find(text); at != std::string::npos) {
            held = 0;
            return at + text.size() - (seen.size() - bytes.size());
        }
        held = std::min(seen.size(), text.size() - 1);
        while (held > 0 && !std::string_view(seen).ends_with(text.substr(0, held))) --held;
        return std::string_view::npos;
    }
};

// The grammar of `tokens` after the text `trigger`: every token may come until the output holds
// it (and, with `arm`, only from once the output holds that), then the grammar from the next
// token. The token that completes the trigger must end with it. Once the grammar's text is
// complete, the output ends (make_grammar_after) or is free again until the trigger comes back
// (make_grammar_on).
class Triggered final : public TokenConstraint {
public:
    Triggered(std::shared_ptr<const AfterMasks> masks, std::shared_ptr<GrammarTokens> tokens, std::string arm, bool repeat)
        : masks_(std::move(masks)), tokens_(std::move(tokens)), arm_(std::move(arm)), repeat_(repeat) {}

    std::unique_ptr<TokenConstraint> restart() const override { return std::make_unique<Triggered>(masks_, tokens_, arm_, repeat_); }

    const std::vector<uint64_t>& allowed() override {
        if (grammar_) return grammar_->allowed();
        return armed_ ? masks_->free[trigger_.held] : masks_->all;
    }

    void accept(int32_t token) override {
        if (grammar_) {
            grammar_->accept(token);
            if (repeat_ && grammar_->finished()) grammar_.reset();  // (free again)
            return;
        }
        std::string_view bytes = tokens_->vocab().of(token);
        if (!armed_) {
            const size_t at = arming_.feed(bytes);
            if (at == std::string_view::npos) return;
            armed_ = true;
            bytes.remove_prefix(at);  // (what follows in the same token counts toward the trigger)
            if (bytes.empty()) return;
        } else {
            TPS_CHECK_AS(ConstraintError, mask_has(masks_->free[trigger_.held], token),
                         "structured output: token {} would carry on past '{}' within itself", token, masks_->end);
        }
        // (a trigger that the token carries on past is text: the mask keeps that from an armed
        // output, and the token that arms it was free to come)
        if (trigger_.feed(bytes) == bytes.size()) grammar_ = make_grammar_constraint(tokens_, false);
    }

    bool finished() const override { return !repeat_ && grammar_ && grammar_->finished(); }

private:
    std::shared_ptr<const AfterMasks> masks_;
    std::shared_ptr<GrammarTokens> tokens_;
    std::string arm_;
    bool repeat_;
    bool armed_ = arm_.empty();
    Watch arming_{arm_};
    Watch trigger_{masks_->end};
    std::unique_ptr<TokenConstraint> grammar_;  // while the grammar's text is being written
};

}  // namespace

std::unique_ptr<TokenConstraint> make_grammar_constraint(std::shared_ptr<GrammarTokens> tokens, bool at_start) {
    return std::make_unique<GrammarConstraint>(std::move(tokens), at_start);
}

std::unique_ptr<TokenConstraint> make_grammar_after(std::string end, std::shared_ptr<GrammarTokens> tokens) {
    TPS_CHECK_AS(UsageError, !end.empty(), "structured output: an empty text to follow the grammar after");
    auto masks = after_masks(std::move(end), tokens->vocab());
    return std::make_unique<Triggered>(std::move(masks), std::move(tokens), std::string(), false);
}

std::unique_ptr<TokenConstraint> make_grammar_on(std::string trigger, std::shared_ptr<GrammarTokens> tokens, std::string after,
                                                 bool once) {
    TPS_CHECK_AS(UsageError, !trigger.empty(), "structured output: an empty text to start the grammar");
    auto masks = after_masks(std::move(trigger), tokens->vocab());
    return std::make_unique<Triggered>(std::move(masks), std::move(tokens), std::move(after), !once);
}

}  // namespace tps::structured
