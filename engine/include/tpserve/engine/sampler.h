// Turning logits into the next token: repetition / presence / frequency penalties, temperature,
// top-k, top-p, min-p, a seeded generator (same seed, same tokens), and log-probabilities of the
// chosen and the most likely tokens. One Sampler per sequence: it keeps that sequence's token
// counts (for the penalties) and its random state. The arithmetic of one row is row_sampling.h's,
// shared with the backends that sample on their device.
#pragma once

#include "tpserve/engine/row_sampling.h"
#include "tpserve/engine/token_constraint.h"

#include <cstdint>
#include <memory>
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
    // OpenAI's logit_bias: added to these tokens' logits (after the repetition penalty, with the
    // presence and frequency penalties), each token once, in [-100, 100]
    std::vector<std::pair<int32_t, float>> logit_bias;
    // vLLM's min_tokens: until this many tokens are generated, the `hold` tokens (the stop
    // tokens) cannot be drawn (kHeldLogit is subtracted from their logits)
    int32_t min_tokens = 0;
    std::vector<int32_t> hold;
    // vLLM's thinking_token_budget (a reasoning model's): once this many tokens are out and the
    // output has not yet held `think_end` (the tokens of "</think>"), those tokens are forced, one
    // a step, kHeldLogit added to each (so it does not take the host's path). -1: no budget.
    int32_t thinking_budget = -1;
    std::vector<int32_t> think_end;
    // structured output: which tokens may come next (each Sampler follows its own restart() of
    // it); every other token gets -inf before the penalties, so log-probabilities are over the
    // allowed tokens. Such a sequence is sampled on the host, from its logits row.
    std::shared_ptr<const TokenConstraint> constraint;
};

inline constexpr float kHeldLogit = 1e4f;

struct TokenLogprob {
    int32_t token = 0;
    float logprob = 0;
};

struct Sampled {
    int32_t token = 0;
    float logprob = 0;                     // of the chosen token (log-softmax after penalties)
    std::vector<TokenLogprob> top;         // the top_logprobs most likely, best first
    int64_t rank = 0;                      // score_token: how many tokens the row gives at least as much (1: the most likely)
};

// Reused buffers of sample_row.
struct RowScratch {
    std::vector<float> logits;
    std::vector<int32_t> order;
    std::vector<uint64_t> weight;
};

// Samples one row of logits as row_sampling.h defines it (the host's computation, and the
// reference a device's is held against). tps::Error on NaN logits or no finite maximum.
Sampled sample_row(std::span<const float> logits, const RowSampling& row, std::span<const PenaltyEntry> penalties,
                   RowScratch& scratch);
// What the model gives `token` in a row of logits, with no penalty or temperature: its
// log-probability, its rank (vLLM's: the tokens whose logit is at least its own, itself
// included) and the `top` most likely tokens' (log-softmax of the row), as sample_row reports them. Prompt log-probabilities (echo). tps::Error as sample_row; UsageError for a token
// outside the row.
Sampled score_token(std::span<const float> logits, int32_t token, int32_t top, RowScratch& scratch);
// A device's result for one row; tps::Error for the statuses sample_row throws on.
Sampled from_device(const SampledRow& row);
// What every Backend::sample_rows checks first: one RowSampling per row of logits, each row's
// penalties inside the list of `penalties` entries. tps::Error naming the row.
void check_sample_rows(int64_t logit_rows, std::span<const RowSampling> rows, size_t penalties);

class Sampler {
public:
    // `prompt`: tokens the penalties count from the start (transformers counts the prompt for the
    // repetition penalty; OpenAI's presence/frequency penalties count generated tokens only).
    Sampler(const SamplingParams& params, std::span<const int32_t> prompt);
    // Checks the parameters; tps::UsageError naming the bad one.
    static void validate(const SamplingParams& params);

    // Samples the next token from this sequence's logits row and records it (sample_row after
    // prepare, then accept).
    Sampled sample(std::span<const float> logits);
    // This step's RowSampling for a backend that samples on its device: draws the step's u from
    // the seeded generator (when temperature > 0) and appends the sequence's penalties to
    // `penalties`. Until accept() it gives the same draw again (a step built twice, e.g. retried
    // after the KV cache filled, draws once). The caller accepts the token the backend picks.
    RowSampling prepare(std::vector<PenaltyEntry>& penalties);
    // Records a token chosen elsewhere (e.g. forced, or sampled on a device), so penalties see it
    // (and the constraint, which throws ConstraintError for a token it does not allow).
    void accept(int32_t token);
    // The constraint admits nothing more: the sequence ends here.
    bool finished() const { return constraint_ && constraint_->finished(); }

private:
    RowSampling row_for(std::vector<PenaltyEntry>& penalties);  // prepare() without its check
    SamplingParams p_;
    std::mt19937_64 rng_;
    std::unordered_map<int32_t, int32_t> prompt_seen_;   // for the repetition penalty
    std::unordered_map<int32_t, int32_t> generated_;     // counts, for presence/frequency
    std::unordered_map<int32_t, float> bias_;            // logit_bias
    std::unordered_map<int32_t, float> step_bias_;       // this step's: bias_, the held tokens, the forced one
    int64_t generated_total_ = 0;
    int32_t forced() const;            // the token the thinking budget forces this step, or -1
    bool thinking_ = false;            // a budget is kept and think_end has not come yet
    std::vector<int32_t> recent_;      // the last tokens, as many as think_end has
    std::optional<double> pending_u_;  // the draw prepare() handed out, until accept()
    std::vector<PenaltyEntry> penalties_;
    RowScratch scratch_;
    std::unique_ptr<TokenConstraint> constraint_;
    std::vector<float> masked_;  // the logits row with the constraint applied
};

}  // namespace tps
