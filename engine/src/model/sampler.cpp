// The sampler: a sequence's state (its seeded generator, the token counts its penalties use)
// and the host's computation of one row as row_sampling.h defines it: penalties on the raw
// logits, log-probabilities from those, then temperature, top-k, top-p, min-p, and a draw from
// what is left in integer weights. Greedy (temperature 0) takes the first maximum, as argmax does.
#include "tpserve/engine/sampler.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace tps {

void Sampler::validate(const SamplingParams& p) {
    TPS_CHECK_AS(UsageError, std::isfinite(p.temperature) && p.temperature >= 0 && p.temperature <= 100,
                 "temperature {} must be in [0, 100]", p.temperature);
    TPS_CHECK_AS(UsageError, p.top_k >= 0, "top_k {} must be >= 0", p.top_k);
    TPS_CHECK_AS(UsageError, std::isfinite(p.top_p) && p.top_p > 0 && p.top_p <= 1, "top_p {} must be in (0, 1]", p.top_p);
    TPS_CHECK_AS(UsageError, std::isfinite(p.min_p) && p.min_p >= 0 && p.min_p <= 1, "min_p {} must be in [0, 1]", p.min_p);
    TPS_CHECK_AS(UsageError, std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0 && p.repetition_penalty <= 10,
                 "repetition_penalty {} must be in (0, 10]", p.repetition_penalty);
    TPS_CHECK_AS(UsageError, std::isfinite(p.presence_penalty) && std::abs(p.presence_penalty) <= 2,
                 "presence_penalty {} must be in [-2, 2]", p.presence_penalty);
    TPS_CHECK_AS(UsageError, std::isfinite(p.frequency_penalty) && std::abs(p.frequency_penalty) <= 2,
                 "frequency_penalty {} must be in [-2, 2]", p.frequency_penalty);
    TPS_CHECK_AS(UsageError, p.top_logprobs >= 0 && p.top_logprobs <= kMaxTopLogprobs, "top_logprobs {} must be in [0, {}]",
                 p.top_logprobs, kMaxTopLogprobs);
    std::unordered_map<int32_t, int> seen;
    for (const auto& [token, bias] : p.logit_bias) {
        TPS_CHECK_AS(UsageError, token >= 0, "logit_bias: token {} is not a token id", token);
        TPS_CHECK_AS(UsageError, std::isfinite(bias) && std::abs(bias) <= 100, "logit_bias: {} for token {} must be in [-100, 100]",
                     bias, token);
        TPS_CHECK_AS(UsageError, ++seen[token] == 1, "logit_bias: token {} is given twice", token);
    }
    TPS_CHECK_AS(UsageError, p.min_tokens >= 0, "min_tokens {} must be >= 0", p.min_tokens);
    TPS_CHECK_AS(UsageError, p.thinking_budget >= -1, "thinking_token_budget {} must be >= 0", p.thinking_budget);
    TPS_CHECK_AS(UsageError, p.thinking_budget < 0 || !p.think_end.empty(), "thinking_token_budget: no tokens end the thoughts");
    for (int32_t t : p.think_end) TPS_CHECK_AS(UsageError, t >= 0, "thinking_token_budget: {} is not a token id", t);
    for (int32_t t : p.hold) TPS_CHECK_AS(UsageError, t >= 0, "min_tokens: {} is not a token id", t);
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt) : p_(params), rng_(params.seed) {
    validate(p_);
    for (int32_t t : prompt) ++prompt_seen_[t];
    for (const auto& [token, bias] : p_.logit_bias) bias_[token] = bias;
    if (p_.constraint) constraint_ = p_.constraint->restart();
    thinking_ = p_.thinking_budget >= 0;
}

void Sampler::accept(int32_t token) {
    if (constraint_) constraint_->accept(token);
    if (thinking_) {
        recent_.push_back(token);
        if (recent_.size() > p_.think_end.size()) recent_.erase(recent_.begin());
        thinking_ = recent_ != p_.think_end;
    }
    ++generated_[token];
    ++generated_total_;
    pending_u_.reset();
}

RowSampling Sampler::prepare(std::vector<PenaltyEntry>& penalties) {
    TPS_CHECK(!constraint_, "sampler: a constrained sequence is sampled on the host (output_kind_for asks for its logits)");
    return row_for(penalties);
}

// Past the budget, the next token of think_end: after as much of it as the output already ends
// with (the model may have begun it itself).
int32_t Sampler::forced() const {
    if (!thinking_ || generated_total_ < p_.thinking_budget) return -1;
    const size_t n = p_.think_end.size();
    for (size_t k = std::min(n - 1, recent_.size()); k > 0; --k) {
        if (std::equal(p_.think_end.begin(), p_.think_end.begin() + static_cast<ptrdiff_t>(k), recent_.end() - static_cast<ptrdiff_t>(k))) {
            return p_.think_end[k];
        }
    }
    return p_.think_end[0];
}

RowSampling Sampler::row_for(std::vector<PenaltyEntry>& penalties) {
    RowSampling row;
    row.temperature = p_.temperature;
    row.top_k = p_.top_k;
    row.top_p = p_.top_p;
    row.min_p = p_.min_p;
    row.top_logprobs = p_.top_logprobs;
    if (p_.temperature > 0.0f) {
        if (!pending_u_) pending_u_ = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
        row.u = *pending_u_;
    }
    row.penalties_first = static_cast<int32_t>(penalties.size());
    // repetition over prompt and output, presence and frequency over the output, the bias on its
    // tokens: one entry per token
    const bool repetition = p_.repetition_penalty != 1.0f;
    const bool holding = generated_total_ < p_.min_tokens && !p_.hold.empty();
    const int32_t force = forced();
    const std::unordered_map<int32_t, float>* biases = &bias_;
    if (holding || force >= 0) {
        step_bias_ = bias_;
        if (holding) {
            for (int32_t t : p_.hold) step_bias_[t] = -kHeldLogit;  // over any bias (at least -100)
        }
        if (force >= 0) step_bias_[force] = kHeldLogit;
        biases = &step_bias_;
    }
    auto bias = [&](int32_t t) {
        const auto b = biases->find(t);
        return b == biases->end() ? 0.0f : b->second;
    };
    if (repetition) {
        for (const auto& [t, c] : prompt_seen_) {
            const auto g = generated_.find(t);
            const float sub = g == generated_.end() ? 0.0f
                                                    : p_.presence_penalty + p_.frequency_penalty * static_cast<float>(g->second);
            penalties.push_back({t, p_.repetition_penalty, sub - bias(t)});
        }
    }
    for (const auto& [t, c] : generated_) {
        if (repetition && prompt_seen_.contains(t)) continue;  // done above
        const float sub = p_.presence_penalty + p_.frequency_penalty * static_cast<float>(c) - bias(t);
        if (repetition || sub != 0.0f) penalties.push_back({t, repetition ? p_.repetition_penalty : 1.0f, sub});
    }
    for (const auto& [t, b] : *biases) {
        if ((repetition && prompt_seen_.contains(t)) || generated_.contains(t)) continue;  // done above
        penalties.push_back({t, 1.0f, -b});
    }
    row.penalties_count = static_cast<int32_t>(penalties.size()) - row.penalties_first;
    return row;
}

Sampled Sampler::sample(std::span<const float> logits) {
    penalties_.clear();
    const RowSampling row = row_for(penalties_);
    if (constraint_) {
        const std::vector<uint64_t>& allowed = constraint_->allowed();
        masked_.assign(logits.begin(), logits.end());
        bool any = false;
        for (size_t t = 0; t < masked_.size(); ++t) {
            if (!mask_has(allowed, static_cast<int64_t>(t))) {
                masked_[t] = -std::numeric_limits<float>::infinity();
            } else {
                any = any || masked_[t] > -std::numeric_limits<float>::infinity();
            }
        }
        // (tokens the tokenizer has past the model's rows, or all at -inf: nothing to draw)
        if (!any) throw ConstraintError("structured output: none of the tokens that may come next has a logit");
        logits = masked_;
    }
    Sampled out = sample_row(logits, row, penalties_, scratch_);
    accept(out.token);
    return out;
}

namespace {

// NaN breaks every comparison (and a sort's ordering); no finite maximum leaves nothing to
// normalise: both refused loudly, with the same words whichever side found them.
[[noreturn]] void broken_logits(SampledRow::Status s) {
    if (s == SampledRow::nan_logits) throw Error("sampler: the model produced NaN logits (a broken checkpoint or an overflow)");
    if (s == SampledRow::no_finite_max) throw Error("sampler: every logit is -inf or the largest is +inf");
    throw DeviceError(fmt::format("sampler: the device found no token at the drawn position (status {})", static_cast<int>(s)));
}

}  // namespace

Sampled from_device(const SampledRow& row) {
    if (row.status != SampledRow::ok) broken_logits(static_cast<SampledRow::Status>(row.status));
    Sampled out;
    out.token = row.token;
    out.logprob = row.logprob;
    const int n = std::clamp(row.n_top, 0, kMaxTopLogprobs);
    for (int i = 0; i < n; ++i) out.top.push_back({row.top_token[i], row.top_logprob[i]});
    return out;
}

void check_sample_rows(int64_t logit_rows, std::span<const RowSampling> rows, size_t penalties) {
    TPS_CHECK(logit_rows == static_cast<int64_t>(rows.size()), "sample_rows: {} rows of logits for {} rows asked for",
              logit_rows, rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
        TPS_CHECK(rows[r].penalties_first >= 0 && rows[r].penalties_count >= 0 &&
                      int64_t{rows[r].penalties_first} + rows[r].penalties_count <= static_cast<int64_t>(penalties),
                  "sample_rows: row {} names penalties past the list", r);
    }
}

Sampled sample_row(std::span<const float> logits, const RowSampling& row, std::span<const PenaltyEntry> penalties,
                   RowScratch& scratch) {
    const auto n = static_cast<int64_t>(logits.size());
    TPS_CHECK(n > 0, "sampler: no logits");
    auto& work = scratch.logits;
    work.assign(logits.begin(), logits.end());
    for (const auto& p : penalties.subspan(static_cast<size_t>(row.penalties_first), static_cast<size_t>(row.penalties_count))) {
        if (p.token >= 0 && p.token < n) work[static_cast<size_t>(p.token)] = sampling::penalised(work[static_cast<size_t>(p.token)], p);
    }
    for (float l : work) {
        if (std::isnan(l)) broken_logits(SampledRow::nan_logits);
    }
    // log-softmax of the penalised logits, for the reported log-probabilities
    const auto first_max = std::max_element(work.begin(), work.end());
    const float max_l = *first_max;
    if (!std::isfinite(max_l)) broken_logits(SampledRow::no_finite_max);
    double z = 0;
    for (float l : work) z += std::exp(static_cast<double>(l - max_l));
    const float log_z = max_l + static_cast<float>(std::log(z));
    auto logprob = [&](int32_t t) { return work[static_cast<size_t>(t)] - log_z; };
    // sorted order: logit descending, token ascending on ties
    auto by_logit = [&](int32_t a, int32_t b) {
        return work[static_cast<size_t>(a)] > work[static_cast<size_t>(b)] ||
               (work[static_cast<size_t>(a)] == work[static_cast<size_t>(b)] && a < b);
    };

    Sampled out;
    if (row.temperature == 0.0f) {
        out.token = static_cast<int32_t>(first_max - work.begin());
    } else {
        auto& w = scratch.weight;
        w.resize(static_cast<size_t>(n));
        uint64_t passing_min_p = 0;
        for (int64_t i = 0; i < n; ++i) {
            w[static_cast<size_t>(i)] = sampling::weight_from(std::exp((work[static_cast<size_t>(i)] - max_l) / row.temperature));
            passing_min_p += sampling::passes_min_p(w[static_cast<size_t>(i)], row.min_p);
        }
        const int64_t n_k = row.top_k > 0 && row.top_k < n ? row.top_k : n;
        // Only tokens of non-zero weight can be drawn or move a sum; they lead the sorted order
        // (the weight falls with the logit), so only they are sorted: at T = 1 the tokens within
        // 27.7 of the maximum, not the whole vocabulary.
        auto& order = scratch.order;
        order.clear();
        for (int64_t i = 0; i < n; ++i) {
            if (w[static_cast<size_t>(i)] > 0) order.push_back(static_cast<int32_t>(i));
        }
        const auto nz = static_cast<int64_t>(order.size());  // >= 1: the maximum weighs 2^40
        const int64_t n_sorted = std::min(n_k, nz);
        if (n_sorted < nz) {
            std::partial_sort(order.begin(), order.begin() + n_sorted, order.end(), by_logit);
        } else {
            std::sort(order.begin(), order.end(), by_logit);
        }
        auto weight_at = [&](int64_t i) { return w[static_cast<size_t>(order[static_cast<size_t>(i)])]; };
        uint64_t s = 0;
        for (int64_t i = 0; i < n_sorted; ++i) s += weight_at(i);
        int64_t cut = n_sorted;
        if (row.top_p < 1.0f) {
            const uint64_t target = sampling::top_p_target(row.top_p, s);
            uint64_t acc = 0;
            for (int64_t i = 0; i < n_sorted; ++i) {
                acc += weight_at(i);
                if (acc >= target) {
                    cut = i + 1;
                    break;
                }
            }
        }
        if (row.min_p > 0.0f) cut = std::min(cut, std::max<int64_t>(1, static_cast<int64_t>(passing_min_p)));
        uint64_t mass = 0;
        for (int64_t i = 0; i < cut; ++i) mass += weight_at(i);
        const uint64_t r = sampling::draw_target(row.u, mass);
        uint64_t acc = 0;
        out.token = order[static_cast<size_t>(cut - 1)];
        for (int64_t i = 0; i < cut; ++i) {
            acc += weight_at(i);
            if (acc > r) {
                out.token = order[static_cast<size_t>(i)];
                break;
            }
        }
    }
    out.logprob = logprob(out.token);
    if (row.top_logprobs > 0) {
        auto& idx = scratch.order;
        idx.resize(static_cast<size_t>(n));
        std::iota(idx.begin(), idx.end(), 0);
        const auto k = std::min<int64_t>(std::min(row.top_logprobs, kMaxTopLogprobs), n);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
        for (int64_t i = 0; i < k; ++i) {
            const int32_t t = idx[static_cast<size_t>(i)];
            if (work[static_cast<size_t>(t)] == -std::numeric_limits<float>::infinity()) break;  // ruled out
            out.top.push_back({t, logprob(t)});
        }
    }
    return out;
}

Sampled score_token(std::span<const float> logits, int32_t token, int32_t top, RowScratch& scratch) {
    TPS_CHECK_AS(UsageError, token >= 0 && token < static_cast<int64_t>(logits.size()), "sampler: token {} is outside a row of {}",
                 token, logits.size());
    RowSampling greedy;
    greedy.temperature = 0.0f;
    greedy.top_logprobs = top;
    Sampled out = sample_row(logits, greedy, {}, scratch);
    const float own = logits[static_cast<size_t>(token)];
    out.rank = std::count_if(logits.begin(), logits.end(), [own](float x) { return x >= own; });
    if (token == out.token) return out;
    // a token among the alternatives has their figure exactly (a client compares them to find
    // whether the token was the most likely); another, the row's log-normaliser from the most
    // likely token's
    const auto alt = std::find_if(out.top.begin(), out.top.end(), [&](const TokenLogprob& t) { return t.token == token; });
    const float log_z = logits[static_cast<size_t>(out.token)] - out.logprob;
    out.logprob = alt != out.top.end() ? alt->logprob : logits[static_cast<size_t>(token)] - log_z;
    out.token = token;
    return out;
}

}  // namespace tps
