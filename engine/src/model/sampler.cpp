// The sampler, in the order transformers' logits processors and OpenAI's penalties apply:
// penalties on the raw logits, log-probabilities from those, then temperature, top-k, top-p,
// min-p, and a draw from what is left. Greedy (temperature 0) takes the first maximum, as argmax
// does.
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
    TPS_CHECK_AS(UsageError, p.top_logprobs >= 0 && p.top_logprobs <= 20, "top_logprobs {} must be in [0, 20]",
                 p.top_logprobs);
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt) : p_(params), rng_(params.seed) {
    validate(p_);
    for (int32_t t : prompt) ++prompt_seen_[t];
}

void Sampler::accept(int32_t token) { ++generated_[token]; }

Sampled Sampler::sample(std::span<const float> logits) {
    const auto n = static_cast<int64_t>(logits.size());
    TPS_CHECK(n > 0, "sampler: no logits");
    work_.assign(logits.begin(), logits.end());
    // penalties: repetition over prompt and output, presence/frequency over the output
    if (p_.repetition_penalty != 1.0f) {
        auto penalise = [&](int32_t t) {
            float& l = work_[static_cast<size_t>(t)];
            l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
        };
        for (const auto& [t, c] : prompt_seen_) {
            if (t >= 0 && t < n) penalise(t);
        }
        for (const auto& [t, c] : generated_) {
            if (t >= 0 && t < n && !prompt_seen_.contains(t)) penalise(t);
        }
    }
    for (const auto& [t, c] : generated_) {
        if (t < 0 || t >= n) continue;
        work_[static_cast<size_t>(t)] -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(c);
    }

    // A NaN would break every comparison below (and the sort's ordering): refuse it loudly.
    for (float l : work_) {
        TPS_CHECK(!std::isnan(l), "sampler: the model produced NaN logits (a broken checkpoint or an overflow)");
    }
    // log-softmax of the penalised logits, for the reported log-probabilities
    const float max_l = *std::max_element(work_.begin(), work_.end());
    TPS_CHECK(std::isfinite(max_l), "sampler: every logit is -inf or the largest is +inf");
    double z = 0;
    for (float l : work_) z += std::exp(static_cast<double>(l - max_l));
    const float log_z = max_l + static_cast<float>(std::log(z));
    auto logprob = [&](int32_t t) { return work_[static_cast<size_t>(t)] - log_z; };

    Sampled out;
    if (p_.temperature == 0.0f) {
        out.token = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    } else {
        // candidates sorted by logit (stable: ties keep token order)
        order_.resize(static_cast<size_t>(n));
        std::iota(order_.begin(), order_.end(), 0);
        int64_t keep = n;
        if (p_.top_k > 0 && p_.top_k < n) keep = p_.top_k;
        auto by_logit = [&](int32_t a, int32_t b) {
            return work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)] ||
                   (work_[static_cast<size_t>(a)] == work_[static_cast<size_t>(b)] && a < b);
        };
        if (keep < n) {
            std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_logit);
            order_.resize(static_cast<size_t>(keep));
        } else {
            std::sort(order_.begin(), order_.end(), by_logit);
        }
        // exp((l - l_max) / T) in double: the argument is <= 0, so no temperature overflows it
        std::vector<double> prob(order_.size());
        const double top = work_[static_cast<size_t>(order_[0])];
        const double t = p_.temperature;
        double sum = 0;
        for (size_t i = 0; i < order_.size(); ++i) {
            prob[i] = std::exp((static_cast<double>(work_[static_cast<size_t>(order_[i])]) - top) / t);
            sum += prob[i];
        }
        for (auto& q : prob) q /= sum;
        size_t cut = prob.size();
        if (p_.top_p < 1.0f) {
            double acc = 0;
            for (size_t i = 0; i < prob.size(); ++i) {
                acc += prob[i];
                if (acc >= p_.top_p) {
                    cut = i + 1;
                    break;
                }
            }
        }
        if (p_.min_p > 0.0f) {
            const double floor = p_.min_p * prob[0];
            size_t i = 1;
            while (i < cut && prob[i] >= floor) ++i;
            cut = i;
        }
        double mass = 0;
        for (size_t i = 0; i < cut; ++i) mass += prob[i];
        std::uniform_real_distribution<double> u(0.0, mass);
        const double r = u(rng_);
        double acc = 0;
        out.token = order_[cut - 1];
        for (size_t i = 0; i < cut; ++i) {
            acc += prob[i];
            if (r < acc) {
                out.token = order_[i];
                break;
            }
        }
    }
    out.logprob = logprob(out.token);
    if (p_.top_logprobs > 0) {
        std::vector<int32_t> idx(static_cast<size_t>(n));
        std::iota(idx.begin(), idx.end(), 0);
        const auto k = std::min<int64_t>(p_.top_logprobs, n);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
            return work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)] ||
                   (work_[static_cast<size_t>(a)] == work_[static_cast<size_t>(b)] && a < b);
        });
        for (int64_t i = 0; i < k; ++i) out.top.push_back({idx[static_cast<size_t>(i)], logprob(idx[static_cast<size_t>(i)])});
    }
    accept(out.token);
    return out;
}

}  // namespace tps
