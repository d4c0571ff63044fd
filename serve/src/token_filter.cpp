// allowed_token_ids, bad_words, and constraints together (token_filter.h).
#include "token_filter.h"

#include "tpserve/common/check.h"

#include <algorithm>

namespace tps::serve {
namespace {

struct FilterRules {
    std::vector<uint64_t> base;               // allowed_token_ids less the one-token bad words
    std::vector<std::vector<int32_t>> bad;    // the longer bad sequences
    size_t longest = 0;                       // tokens of history they need
};

void clear_bit(std::vector<uint64_t>& mask, int64_t t) {
    const auto word = static_cast<size_t>(t >> 6);
    if (t >= 0 && word < mask.size()) mask[word] &= ~(uint64_t{1} << (t & 63));
}

class TokenFilter final : public TokenConstraint {
public:
    explicit TokenFilter(std::shared_ptr<const FilterRules> rules) : rules_(std::move(rules)) {}

    std::unique_ptr<TokenConstraint> restart() const override { return std::make_unique<TokenFilter>(rules_); }

    const std::vector<uint64_t>& allowed() override {
        mask_ = rules_->base;
        for (const auto& seq : rules_->bad) {
            const size_t before = seq.size() - 1;
            if (history_.size() >= before && std::equal(seq.begin(), seq.end() - 1, history_.end() - static_cast<std::ptrdiff_t>(before))) {
                clear_bit(mask_, seq.back());
            }
        }
        TPS_CHECK_AS(ConstraintError, std::any_of(mask_.begin(), mask_.end(), [](uint64_t w) { return w != 0; }),
                     "allowed_token_ids and bad_words leave no token that may come next");
        return mask_;
    }

    void accept(int32_t token) override {
        TPS_CHECK_AS(ConstraintError, mask_has(rules_->base, token), "token {} is not among allowed_token_ids (or is a bad word)", token);
        if (rules_->longest < 2) return;
        history_.push_back(token);
        if (history_.size() > rules_->longest - 1) history_.erase(history_.begin());
    }

    bool finished() const override { return false; }

private:
    std::shared_ptr<const FilterRules> rules_;
    std::vector<int32_t> history_;  // the last tokens of the output, as many as a bad sequence needs
    std::vector<uint64_t> mask_;
};

class Both final : public TokenConstraint {
public:
    Both(std::unique_ptr<TokenConstraint> a, std::unique_ptr<TokenConstraint> b) : a_(std::move(a)), b_(std::move(b)) {}

    std::unique_ptr<TokenConstraint> restart() const override { return std::make_unique<Both>(a_->restart(), b_->restart()); }

    const std::vector<uint64_t>& allowed() override {
        const std::vector<uint64_t>& x = a_->allowed();
        const std::vector<uint64_t>& y = b_->allowed();
        mask_.resize(std::min(x.size(), y.size()));  // (ids past a mask may not come)
        for (size_t i = 0; i < mask_.size(); ++i) mask_[i] = x[i] & y[i];
        TPS_CHECK_AS(ConstraintError, std::any_of(mask_.begin(), mask_.end(), [](uint64_t w) { return w != 0; }),
                     "the output format and allowed_token_ids / bad_words leave no token that may come next");
        return mask_;
    }

    void accept(int32_t token) override {
        a_->accept(token);
        b_->accept(token);
    }

    bool finished() const override { return a_->finished() || b_->finished(); }

private:
    std::unique_ptr<TokenConstraint> a_, b_;
    std::vector<uint64_t> mask_;
};

}  // namespace

std::unique_ptr<TokenConstraint> make_token_filter(int64_t vocab, const std::vector<int32_t>& allowed,
                                                   std::vector<std::vector<int32_t>> bad) {
    auto rules = std::make_shared<FilterRules>();
    const auto words = static_cast<size_t>((vocab + 63) / 64);
    if (allowed.empty()) {
        rules->base.assign(words, ~uint64_t{0});
        if (vocab % 64) rules->base.back() = (uint64_t{1} << (vocab % 64)) - 1;
    } else {
        rules->base.assign(words, 0);
        for (const int32_t t : allowed) {
            if (t >= 0 && t < vocab) rules->base[static_cast<size_t>(t) / 64] |= uint64_t{1} << (t % 64);
        }
    }
    for (auto& seq : bad) {
        if (seq.empty()) continue;
        if (seq.size() == 1) {
            clear_bit(rules->base, seq[0]);
            continue;
        }
        rules->longest = std::max(rules->longest, seq.size());
        rules->bad.push_back(std::move(seq));
    }
    return std::make_unique<TokenFilter>(std::move(rules));
}

std::unique_ptr<TokenConstraint> make_both(std::unique_ptr<TokenConstraint> a, std::unique_ptr<TokenConstraint> b) {
    return std::make_unique<Both>(std::move(a), std::move(b));
}

}  // namespace tps::serve
