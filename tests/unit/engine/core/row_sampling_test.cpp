// Sampling one row as row_sampling.h defines it (the host's sample_row, which a device's kernel is
// held against in the GPU tests): against a plain reading of the same rules in double precision
// with a full sort (the sampler's computation before integer weights), Sampler::sample equal to
// prepare + sample_row + accept, one draw per step however often it is prepared, penalties as
// entries, and a model's sampled entries equal to sampling its logits.
#include "tpserve/common/error.h"
#include "tpserve/engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <array>
#include <limits>
#include <map>
#include <random>

namespace tps {
namespace {

// The rules in double: sort, probabilities over the top_k prefix, the top_p and min_p cuts, the
// draw at u times the kept mass.
int32_t plain_reading(const std::vector<float>& l, const RowSampling& s) {
    const auto n = static_cast<int64_t>(l.size());
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[static_cast<size_t>(a)] > l[static_cast<size_t>(b)]; });
    if (s.temperature == 0.0f) return order[0];
    const int64_t keep = s.top_k > 0 && s.top_k < n ? s.top_k : n;
    std::vector<double> p(static_cast<size_t>(keep));
    double sum = 0;
    for (int64_t i = 0; i < keep; ++i) {
        p[static_cast<size_t>(i)] = std::exp((static_cast<double>(l[static_cast<size_t>(order[static_cast<size_t>(i)])]) -
                                              l[static_cast<size_t>(order[0])]) / s.temperature);
        sum += p[static_cast<size_t>(i)];
    }
    for (auto& x : p) x /= sum;
    int64_t cut = keep;
    if (s.top_p < 1.0f) {
        double acc = 0;
        for (int64_t i = 0; i < keep; ++i) {
            acc += p[static_cast<size_t>(i)];
            if (acc >= s.top_p) {
                cut = i + 1;
                break;
            }
        }
    }
    if (s.min_p > 0.0f) {
        int64_t i = 1;
        while (i < cut && p[static_cast<size_t>(i)] >= s.min_p * p[0]) ++i;
        cut = i;
    }
    double mass = 0;
    for (int64_t i = 0; i < cut; ++i) mass += p[static_cast<size_t>(i)];
    const double r = s.u * mass;
    double acc = 0;
    for (int64_t i = 0; i < cut; ++i) {
        acc += p[static_cast<size_t>(i)];
        if (r < acc) return order[static_cast<size_t>(i)];
    }
    return order[static_cast<size_t>(cut - 1)];
}

TEST(RowSampling, AgreesWithAPlainReadingOfTheRules) {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> logit(0.0f, 3.0f);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    RowScratch scratch;
    int agree = 0, total = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        const int64_t n = 1 + static_cast<int64_t>(rng() % 3000);
        std::vector<float> l(static_cast<size_t>(n));
        for (auto& x : l) x = logit(rng);
        if (trial % 5 == 0) {
            for (int k = 0; k < 20; ++k) l[rng() % static_cast<size_t>(n)] = 4.0f;  // ties, near the top
        }
        RowSampling s;
        s.temperature = trial % 11 == 0 ? 0.0f : std::array{0.3f, 0.7f, 1.0f, 1.5f}[trial % 4];
        s.top_k = trial % 3 == 0 ? static_cast<int32_t>(1 + rng() % 60) : 0;
        s.top_p = trial % 2 == 0 ? std::array{0.5f, 0.9f, 0.95f}[trial % 3] : 1.0f;
        s.min_p = trial % 7 < 2 ? std::array{0.02f, 0.1f}[trial % 2] : 0.0f;
        s.u = unit(rng);
        const Sampled got = sample_row(l, s, {}, scratch);
        ++total;
        agree += got.token == plain_reading(l, s);
    }
    // integer weights and float exponentials move a boundary by about 1e-7 of the mass: a
    // disagreement needs a draw that close to one
    EXPECT_GE(agree, total - 3) << agree << " of " << total;
}

TEST(RowSampling, CutsThroughTiesKeepTheLowerTokens) {
    RowScratch scratch;
    const std::vector<float> l = {-1.0f, 2.0f, 0.0f, 2.0f, 2.0f, 2.0f};
    RowSampling s;
    s.top_k = 2;  // two of the four tied leaders: tokens 1 and 3
    std::map<int32_t, int> seen;
    for (int i = 0; i < 200; ++i) {
        s.u = (i + 0.5) / 200;
        ++seen[sample_row(l, s, {}, scratch).token];
    }
    EXPECT_EQ(seen, (std::map<int32_t, int>{{1, 100}, {3, 100}}));
    s.top_k = 0;
    s.min_p = 0.9f;  // the four leaders, each a quarter
    seen.clear();
    for (int i = 0; i < 200; ++i) {
        s.u = (i + 0.5) / 200;
        ++seen[sample_row(l, s, {}, scratch).token];
    }
    EXPECT_EQ(seen, (std::map<int32_t, int>{{1, 50}, {3, 50}, {4, 50}, {5, 50}}));
    s.temperature = 0;  // -0 and +0 compare equal: the first is the maximum
    EXPECT_EQ(sample_row(std::vector<float>{-3.0f, -0.0f, 0.0f, -1.0f}, s, {}, scratch).token, 1);
}

TEST(RowSampling, LogprobsAndAlternativesAsTheLogSoftmax) {
    const std::vector<float> l = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.5f};
    RowSampling s;
    s.temperature = 0.8f;
    s.top_logprobs = 4;
    s.u = 0.3;
    RowScratch scratch;
    const Sampled got = sample_row(l, s, {}, scratch);
    double z = 0;
    for (float x : l) z += std::exp(static_cast<double>(x) - 3.0);
    const double log_z = 3.0 + std::log(z);
    EXPECT_NEAR(got.logprob, l[static_cast<size_t>(got.token)] - log_z, 1e-6);
    ASSERT_EQ(got.top.size(), 4u);
    const std::vector<int32_t> want = {1, 4, 2, 0};
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(got.top[i].token, want[i]);
        EXPECT_NEAR(got.top[i].logprob, l[static_cast<size_t>(want[i])] - log_z, 1e-6);
    }
}

// A prompt token's score: the log-softmax of the raw row at that token (whichever it is), and the
// same alternatives sample_row reports.
TEST(RowSampling, ScoreTokenIsTheLogSoftmaxAtTheGivenToken) {
    const std::vector<float> l = {1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.5f};
    double z = 0;
    for (float x : l) z += std::exp(static_cast<double>(x) - 3.0);
    const double log_z = 3.0 + std::log(z);
    RowScratch scratch;
    for (int32_t t = 0; t < 6; ++t) {
        const Sampled got = score_token(l, t, 3, scratch);
        EXPECT_EQ(got.token, t);
        EXPECT_NEAR(got.logprob, l[static_cast<size_t>(t)] - log_z, 1e-6) << t;
        ASSERT_EQ(got.top.size(), 3u);
        EXPECT_EQ(got.top[0].token, 1);
        EXPECT_EQ(got.top[1].token, 4);
        EXPECT_EQ(got.top[2].token, 2);
    }
    // the most likely token's score is its top entry's, exactly (lm-eval's is_greedy compares them)
    const Sampled best = score_token(l, 1, 1, scratch);
    EXPECT_EQ(best.logprob, best.top.at(0).logprob);
    EXPECT_TRUE(score_token(l, 3, 0, scratch).top.empty());
    EXPECT_THROW(score_token(l, 6, 1, scratch), UsageError);
    EXPECT_THROW(score_token(l, -1, 1, scratch), UsageError);
    const std::vector<float> broken = {1.0f, std::nanf("")};
    EXPECT_THROW(score_token(broken, 0, 1, scratch), Error);
}

TEST(RowSampling, PenaltyEntriesRewriteTheirTokens) {
    const std::vector<float> l = {1.0f, 3.0f, -2.0f, 0.5f};
    RowSampling s;
    s.temperature = 0.0f;
    s.top_logprobs = 4;
    const std::vector<PenaltyEntry> pen = {{1, 2.0f, 0.0f}, {2, 2.0f, 0.5f}, {3, 1.0f, -2.0f}};
    s.penalties_count = 3;
    RowScratch scratch;
    const Sampled got = sample_row(l, s, pen, scratch);
    // 3.0 / 2 = 1.5; -2.0 * 2 - 0.5 = -4.5; 0.5 + 2 = 2.5: token 3 leads
    EXPECT_EQ(got.token, 3);
    EXPECT_EQ(got.top[1].token, 1);
    EXPECT_EQ(got.top[3].token, 2);
    EXPECT_NEAR(got.top[0].logprob - got.top[3].logprob, 2.5 + 4.5, 1e-5);
}

TEST(RowSampling, BrokenRowsAreRefusedOnBothSides) {
    RowScratch scratch;
    RowSampling s;
    EXPECT_THROW(sample_row(std::vector<float>{1.0f, std::nanf("")}, s, {}, scratch), Error);
    const float inf = std::numeric_limits<float>::infinity();
    EXPECT_THROW(sample_row(std::vector<float>{-inf, -inf}, s, {}, scratch), Error);
    SampledRow bad;
    bad.status = SampledRow::nan_logits;
    try {
        from_device(bad);
        FAIL() << "a NaN status was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
    }
    bad.status = SampledRow::no_finite_max;
    EXPECT_THROW(from_device(bad), Error);
}

SamplingParams busy_params() {
    SamplingParams p;
    p.temperature = 0.9f;
    p.top_k = 20;
    p.top_p = 0.9f;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.2f;
    p.top_logprobs = 3;
    p.seed = 77;
    return p;
}

TEST(RowSampling, SamplerSampleIsPrepareThenSampleRow) {
    const std::vector<int32_t> prompt = {3, 9, 9, 14};
    Sampler a(busy_params(), prompt), b(busy_params(), prompt);
    std::mt19937_64 rng(2);
    std::normal_distribution<float> logit(0.0f, 2.0f);
    RowScratch scratch;
    for (int step = 0; step < 100; ++step) {
        std::vector<float> l(40);
        for (auto& x : l) x = logit(rng);
        const Sampled x = a.sample(l);
        std::vector<PenaltyEntry> pen;
        const RowSampling how = b.prepare(pen);
        const Sampled y = sample_row(l, how, pen, scratch);
        b.accept(y.token);
        ASSERT_EQ(x.token, y.token) << "step " << step;
        EXPECT_EQ(x.logprob, y.logprob);
        ASSERT_EQ(x.top.size(), y.top.size());
    }
}

TEST(RowSampling, PrepareDrawsOncePerToken) {
    Sampler s(busy_params(), std::vector<int32_t>{1, 2});
    std::vector<PenaltyEntry> pen;
    const RowSampling first = s.prepare(pen);
    const RowSampling again = s.prepare(pen);  // the step built again (e.g. retried)
    EXPECT_EQ(first.u, again.u);
    s.accept(5);
    EXPECT_NE(s.prepare(pen).u, first.u);
    SamplingParams greedy;
    greedy.temperature = 0;
    Sampler g(greedy, {});
    EXPECT_EQ(g.prepare(pen).u, 0.0);  // greedy draws nothing
}

TEST(RowSampling, PenaltiesBecomeOneEntryPerToken) {
    Sampler s(busy_params(), std::vector<int32_t>{1, 2, 2});
    s.accept(2);
    s.accept(7);
    s.accept(7);
    std::vector<PenaltyEntry> pen = {{99, 1.0f, 0.0f}};  // another row's, left alone
    const RowSampling how = s.prepare(pen);
    EXPECT_EQ(how.penalties_first, 1);
    ASSERT_EQ(how.penalties_count, 3);
    std::map<int32_t, PenaltyEntry> by;
    for (int i = 0; i < 3; ++i) by[pen[static_cast<size_t>(1 + i)].token] = pen[static_cast<size_t>(1 + i)];
    ASSERT_EQ(by.size(), 3u);
    EXPECT_EQ(by[1].repetition, 1.3f);  // prompt only: repetition, nothing subtracted
    EXPECT_EQ(by[1].subtract, 0.0f);
    EXPECT_FLOAT_EQ(by[2].subtract, 0.4f + 0.2f * 1);  // prompt and output once
    EXPECT_FLOAT_EQ(by[7].subtract, 0.4f + 0.2f * 2);  // output twice
    EXPECT_EQ(by[7].repetition, 1.3f);
}

}  // namespace
}  // namespace tps
