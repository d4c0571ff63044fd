// The sampler: greedy is argmax, a seed fixes the draws, top-k / top-p / min-p never let out a
// token they exclude, penalties follow their definitions, log-probabilities are normalised.
#include "tpserve/common/error.h"
#include "tpserve/engine/generate.h"
#include "tpserve/engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

namespace tps {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.5f};

TEST(Sampler, GreedyTakesTheFirstMaximum) {
    SamplingParams p;
    p.temperature = 0;
    Sampler s(p, {});
    EXPECT_EQ(s.sample(kLogits).token, 1);
}

TEST(Sampler, SameSeedSameTokens) {
    SamplingParams p;
    p.temperature = 1.3f;
    p.seed = 42;
    Sampler a(p, {}), b(p, {});
    std::vector<int32_t> ta, tb;
    for (int i = 0; i < 50; ++i) {
        ta.push_back(a.sample(kLogits).token);
        tb.push_back(b.sample(kLogits).token);
    }
    EXPECT_EQ(ta, tb);
    p.seed = 43;
    Sampler c(p, {});
    std::vector<int32_t> tc;
    for (int i = 0; i < 50; ++i) tc.push_back(c.sample(kLogits).token);
    EXPECT_NE(ta, tc);
}

std::set<int32_t> drawn(SamplingParams p, int n = 2000) {
    std::set<int32_t> out;
    Sampler s(p, {});
    for (int i = 0; i < n; ++i) out.insert(s.sample(kLogits).token);
    return out;
}

TEST(Sampler, FiltersKeepOnlyWhatTheyAllow) {
    SamplingParams p;
    p.temperature = 2.0f;
    EXPECT_EQ(drawn(p).size(), 6u);  // at a high temperature everything turns up
    p.top_k = 3;
    EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 4, 2}));
    p.top_k = 0;
    p.top_p = 0.5f;  // the two tied leaders (equal logits) make up just over half
    const auto nucleus = drawn(p);
    EXPECT_TRUE(nucleus.count(1) && nucleus.size() <= 3) << nucleus.size();
    p.top_p = 1.0f;
    p.temperature = 1.0f;
    p.min_p = 0.5f;  // p >= 0.5 * p_max: exp(2.5 - 3) = 0.61 passes, exp(1 - 3) does not
    EXPECT_EQ(drawn(p), (std::set<int32_t>{1, 2, 4}));
}

TEST(Sampler, PenaltiesAsDefined) {
    SamplingParams p;
    p.temperature = 0;
    p.repetition_penalty = 2.0f;  // token 1 (3.0 -> 1.5) and 4 (3.0 -> 1.5) seen in the prompt
    Sampler rep(p, std::vector<int32_t>{1, 4});
    EXPECT_EQ(rep.sample(kLogits).token, 2);
    SamplingParams f;
    f.temperature = 0;
    f.frequency_penalty = 0.4f;
    Sampler freq(f, {});
    freq.accept(1);
    freq.accept(1);  // 3.0 - 0.8 = 2.2 < 2.5 ... but token 4 still has 3.0
    EXPECT_EQ(freq.sample(kLogits).token, 4);
    SamplingParams pr;
    pr.temperature = 0;
    pr.presence_penalty = 1.0f;
    Sampler pres(pr, std::vector<int32_t>{1});  // the prompt does not count for presence
    EXPECT_EQ(pres.sample(kLogits).token, 1);
}

TEST(Sampler, LogitBiasIsAddedToItsTokens) {
    SamplingParams p;
    p.temperature = 0;
    p.logit_bias = {{1, -100.0f}, {4, -100.0f}};  // both maxima banned
    EXPECT_EQ(Sampler(p, {}).sample(kLogits).token, 2);
    p.logit_bias = {{3, 5.0f}};  // -1 + 5 = 4 beats 3
    const Sampled forced = Sampler(p, {}).sample(kLogits);
    EXPECT_EQ(forced.token, 3);
    EXPECT_LT(forced.logprob, 0.0f);
    // with the repetition penalty on the same token, one entry: divided first, then the bias
    p.repetition_penalty = 2.0f;
    p.logit_bias = {{1, 0.2f}, {4, 1.6f}};  // 3.0 / 2 + 0.2 = 1.7; 3.0 / 2 + 1.6 = 3.1
    Sampler both(p, std::vector<int32_t>{1, 4});
    std::vector<PenaltyEntry> entries;
    both.prepare(entries);
    EXPECT_EQ(entries.size(), 2u);
    EXPECT_EQ(both.sample(kLogits).token, 4);
    // with presence on a generated token: presence and bias in one subtraction
    SamplingParams q;
    q.temperature = 0;
    q.presence_penalty = 1.0f;
    q.logit_bias = {{1, 0.5f}};  // 3.0 - 1 + 0.5 = 2.5: token 4 (3.0) wins
    Sampler pres(q, {});
    pres.accept(1);
    EXPECT_EQ(pres.sample(kLogits).token, 4);
    std::vector<PenaltyEntry> one;
    Sampler(q, {}).prepare(one);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_FLOAT_EQ(one[0].subtract, -0.5f);
}

TEST(Sampler, MinTokensHoldsTheStopTokensBack) {
    SamplingParams p;
    p.temperature = 0;
    p.min_tokens = 2;
    p.hold = {1, 4, 4};  // the two maxima (and a repeat: still one entry)
    p.logit_bias = {{4, 50.0f}};  // held beats a bias
    Sampler s(p, {});
    std::vector<PenaltyEntry> entries;
    s.prepare(entries);
    EXPECT_EQ(entries.size(), 2u);
    EXPECT_EQ(s.sample(kLogits).token, 2);
    EXPECT_EQ(s.sample(kLogits).token, 2);
    EXPECT_EQ(s.sample(kLogits).token, 4);  // two out: released, and the bias counts again
}

// vLLM's thinking_token_budget: past the budget, the tokens that end the thoughts are forced one a
// step (after as much of them as the output already ends with), then sampling is free again.
TEST(Sampler, AThinkingBudgetForcesTheEndOfTheThoughts) {
    auto run = [](SamplingParams p, const std::vector<std::vector<float>>& rows) {
        Sampler s(p, {});
        std::vector<int32_t> out;
        for (const auto& row : rows) out.push_back(s.sample(row).token);
        return out;
    };
    SamplingParams p;
    p.temperature = 0;
    p.thinking_budget = 2;
    p.think_end = {3, 5};  // (the two least likely tokens of kLogits but one)
    const std::vector<std::vector<float>> plain(6, kLogits);
    EXPECT_EQ(run(p, plain), (std::vector<int32_t>{1, 1, 3, 5, 1, 1}));
    // sampled, the forced tokens come whatever the draw (and the budget 0: at once)
    p.temperature = 1.5f;
    p.thinking_budget = 0;
    for (uint64_t seed = 0; seed < 20; ++seed) {
        p.seed = seed;
        const std::vector<int32_t> out = run(p, plain);
        EXPECT_EQ(std::vector<int32_t>(out.begin(), out.begin() + 2), (std::vector<int32_t>{3, 5}));
    }
    // thoughts the model ends itself within the budget: nothing forced
    p.temperature = 0;
    p.thinking_budget = 4;
    std::vector<std::vector<float>> ends = plain;
    ends[0][3] = 9;
    ends[1][5] = 9;
    EXPECT_EQ(run(p, ends), (std::vector<int32_t>{3, 5, 1, 1, 1, 1}));
    // the model begins the end itself at the budget: only the rest is forced
    p.thinking_budget = 2;
    std::vector<std::vector<float>> begins = plain;
    begins[1][3] = 9;
    EXPECT_EQ(run(p, begins), (std::vector<int32_t>{1, 3, 5, 1, 1, 1}));
    // on a device the forced token is a penalty entry (the sequence is not sampled on the host)
    EXPECT_EQ(output_kind_for(p, true), StepOutputKind::sample);
    Sampler at_budget(p, {});
    at_budget.accept(1);
    at_budget.accept(1);
    std::vector<PenaltyEntry> entries;
    at_budget.prepare(entries);
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].token, 3);
    EXPECT_FLOAT_EQ(entries[0].subtract, -kHeldLogit);
}

TEST(Sampler, LogprobsAreALogSoftmax) {
    SamplingParams p;
    p.temperature = 0;
    p.top_logprobs = 6;
    Sampler s(p, {});
    const Sampled out = s.sample(kLogits);
    double z = 0;
    for (float l : kLogits) z += std::exp(l);
    EXPECT_NEAR(out.logprob, 3.0 - std::log(z), 1e-5);
    ASSERT_EQ(out.top.size(), 6u);
    double total = 0;
    for (const auto& t : out.top) total += std::exp(t.logprob);
    EXPECT_NEAR(total, 1.0, 1e-5);
    EXPECT_EQ(out.top[0].token, 1);  // ties keep token order
    EXPECT_EQ(out.top[1].token, 4);
}

TEST(Sampler, BadParametersNameThemselves) {
    auto bad = [](auto mutate, const char* needle) {
        SamplingParams p;
        mutate(p);
        try {
            Sampler::validate(p);
            FAIL() << needle;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    bad([](SamplingParams& p) { p.temperature = -1; }, "temperature");
    bad([](SamplingParams& p) { p.top_p = 0; }, "top_p");
    bad([](SamplingParams& p) { p.thinking_budget = 5; }, "no tokens end the thoughts");
    bad([](SamplingParams& p) { p.thinking_budget = -2; }, "thinking_token_budget");
    bad([](SamplingParams& p) { p.min_p = 1.5f; }, "min_p");
    bad([](SamplingParams& p) { p.top_k = -2; }, "top_k");
    bad([](SamplingParams& p) { p.repetition_penalty = 0; }, "repetition_penalty");
    bad([](SamplingParams& p) { p.presence_penalty = 3; }, "presence_penalty");
    bad([](SamplingParams& p) { p.frequency_penalty = std::nanf(""); }, "frequency_penalty");
    bad([](SamplingParams& p) { p.top_logprobs = 21; }, "top_logprobs");
    bad([](SamplingParams& p) { p.logit_bias = {{3, 150.0f}}; }, "logit_bias");
    bad([](SamplingParams& p) { p.logit_bias = {{3, 1.0f}, {3, 2.0f}}; }, "given twice");
    bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }, "logit_bias");
    bad([](SamplingParams& p) { p.min_tokens = -1; }, "min_tokens");
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

TEST(Sampler, TinyTemperaturesBehaveAsGreedy) {
    for (float t : {1e-3f, 1e-20f, 1e-38f}) {
        SamplingParams p;
        p.temperature = t;
        Sampler s(p, {});
        EXPECT_EQ(s.sample(kLogits).token, 1) << t;  // the first of the two maxima, or its twin
    }
}

TEST(Sampler, BrokenLogitsAreRefused) {
    SamplingParams p;
    Sampler s(p, {});
    std::vector<float> nan = kLogits;
    nan[2] = std::nanf("");
    EXPECT_THROW(s.sample(nan), Error);
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_THROW(s.sample(std::vector<float>{-inf, -inf}), Error);
}

}  // namespace
}  // namespace tps
