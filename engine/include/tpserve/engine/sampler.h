// Turning logits into the next token: repetition / presence / frequency penalties, temperature,
// top-k, top-p, min-p, a seeded generator (same seed, same tokens), and log-probabilities of the
// chosen and the most likely tokens. One Sampler per sequence: it keeps that sequence's token
// counts (for the penalties) and its random state.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

namespace tps {

struct SamplingParams {
    float temperature = 1.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off; keep tokens with p >= min_p * p_max
    float repetition_penalty = 1.0f;  // HF style: seen tokens' logits divided (>0) or multiplied (<0)
    float presence_penalty = 0.0f;    // OpenAI style: minus this once a token was seen
    float frequency_penalty = 0.0f;   // minus this per occurrence
    uint64_t seed = 0;
    int32_t top_logprobs = 0;  // how many alternatives to report (0: none)
};

struct TokenLogprob {
    int32_t token = 0;
    float logprob = 0;
};

struct Sampled {
    int32_t token = 0;
    float logprob = 0;                     // of the chosen token (log-softmax after penalties)
    std::vector<TokenLogprob> top;         // the top_logprobs most likely, best first
};

class Sampler {
public:
    // `prompt`: tokens the penalties count from the start (transformers counts the prompt for the
    // repetition penalty; OpenAI's presence/frequency penalties count generated tokens only).
    Sampler(const SamplingParams& params, std::span<const int32_t> prompt);
    // Checks the parameters; tps::UsageError naming the bad one.
    static void validate(const SamplingParams& params);

    Sampled sample(std::span<const float> logits);
    // Records a token chosen elsewhere (e.g. forced), so penalties see it.
    void accept(int32_t token);

private:
    SamplingParams p_;
    std::mt19937_64 rng_;
    std::unordered_map<int32_t, int32_t> prompt_seen_;   // for the repetition penalty
    std::unordered_map<int32_t, int32_t> generated_;     // counts, for presence/frequency
    std::vector<float> work_;
    std::vector<int32_t> order_;
};

}  // namespace tps
