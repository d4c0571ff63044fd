// Sampling on the device against the host's sample_row (through CpuBackend::sample_rows) on the
// same rows: vocabularies from 1 to 128256 tokens, ties, -inf entries, penalties, every filter
// alone and together, greedy, alternatives. Tokens must be equal but for draws within float
// rounding of a boundary (at most 1 in 200 here; none expected); log-probabilities within 1e-5 of the largest
// magnitude; alternatives the same tokens in the same order. Skipped where no GPU is usable.
#include "cuda_test_support.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>

namespace tps {
namespace {

#if TPS_HAS_CUDA
using testing::DeviceTensor;

class CudaSample : public ::testing::Test {
protected:
    void SetUp() override {
        TPS_REQUIRE_CUDA(gpu_);
        cpu_ = make_cpu_backend(2);
    }
    std::unique_ptr<Backend> gpu_, cpu_;
};

std::vector<RowSampling> settings() {
    std::vector<RowSampling> out;
    auto add = [&](float t, int32_t k, float p, float m, int32_t lp) {
        RowSampling r;
        r.temperature = t;
        r.top_k = k;
        r.top_p = p;
        r.min_p = m;
        r.top_logprobs = lp;
        out.push_back(r);
    };
    add(0.0f, 0, 1.0f, 0.0f, 0);     // greedy
    add(0.0f, 0, 1.0f, 0.0f, 20);    // greedy with alternatives
    add(1.0f, 0, 1.0f, 0.0f, 0);     // the whole distribution
    add(0.7f, 40, 1.0f, 0.0f, 5);    // top-k
    add(1.0f, 0, 0.9f, 0.0f, 0);     // top-p
    add(1.2f, 0, 1.0f, 0.05f, 1);    // min-p
    add(0.8f, 50, 0.8f, 0.1f, 3);    // all three
    add(1e-3f, 0, 0.95f, 0.0f, 0);   // near greedy
    add(1.0f, 5, 1.0f, 0.0f, 8);     // top-k and alternatives cutting through a group of ties
    add(0.5f, 0, 1.0f, 0.9f, 0);     // min-p keeping only the tied leaders
    return out;
}

TEST_F(CudaSample, MatchesTheHostOnEveryFilter) {
    std::mt19937_64 rng(11);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const auto how = settings();
    const auto rows = static_cast<int64_t>(how.size());
    int draws = 0, differ = 0;
    for (int64_t cols : {1, 7, 1000, 32000, 128256}) {
        std::normal_distribution<float> logit(0.0f, 4.0f);
        std::vector<float> l(static_cast<size_t>(rows * cols));
        for (auto& x : l) x = logit(rng);
        if (cols > 100) {
            // row 0 (greedy): every logit negative but -0 at 3 and +0 at 4, one key: token 3 leads
            for (int64_t i = 0; i < cols; ++i) l[static_cast<size_t>(i)] = -std::abs(l[static_cast<size_t>(i)]) - 1.0f;
            l[3] = -0.0f;
            l[4] = 0.0f;
            for (int64_t r = 1; r < rows; ++r) {
                float* row = l.data() + r * cols;
                for (int k = 0; k < 12; ++k) row[rng() % static_cast<size_t>(cols)] = 15.0f;  // ties at the top
                for (int k = 0; k < 30; ++k) row[rng() % static_cast<size_t>(cols)] = -std::numeric_limits<float>::infinity();
                row[3] = -0.0f;
                row[4] = 0.0f;
            }
        }
        // penalties on a few distinct tokens of every row
        std::vector<PenaltyEntry> pen;
        std::vector<RowSampling> h = how;
        for (int64_t r = 0; r < rows; ++r) {
            h[static_cast<size_t>(r)].penalties_first = static_cast<int32_t>(pen.size());
            std::set<int32_t> tokens;
            for (int k = 0; k < 25 && static_cast<int64_t>(tokens.size()) < cols; ++k) tokens.insert(static_cast<int32_t>(rng() % static_cast<uint64_t>(cols)));
            for (int32_t t : tokens) pen.push_back({t, 1.3f, (t % 3) * 0.4f});
            h[static_cast<size_t>(r)].penalties_count = static_cast<int32_t>(tokens.size());
        }
#if defined(TPS_CUDA_EMULATED)
        // the host emulator takes about a second a row at 128256 tokens: fewer draws on long rows
        const int trials = cols >= 32000 ? 3 : 25;
#else
        const int trials = 25;
#endif
        for (int trial = 0; trial < trials; ++trial) {
            for (auto& r : h) r.u = unit(rng);
            std::vector<SampledRow> want(static_cast<size_t>(rows)), got(static_cast<size_t>(rows));
            std::vector<float> host = l;  // sample_rows may rewrite the logits
            cpu_->sample_rows(Tensor{host.data(), DType::f32, rows, cols}, h, pen, want.data());
            DeviceTensor dl(*gpu_, l, rows, cols);
            gpu_->sample_rows(dl.t, h, pen, got.data());
            for (int64_t r = 0; r < rows; ++r) {
                const SampledRow& a = want[static_cast<size_t>(r)];
                const SampledRow& b = got[static_cast<size_t>(r)];
                const std::string where = "cols " + std::to_string(cols) + " row " + std::to_string(r);
                ASSERT_EQ(b.status, SampledRow::ok) << where;
                ASSERT_GE(b.token, 0) << where;
                ASSERT_LT(b.token, cols) << where;
                ++draws;
                if (h[static_cast<size_t>(r)].temperature == 0.0f) {
                    EXPECT_EQ(b.token, a.token) << where << ": greedy";
                    if (cols > 100 && r == 0) {
                        EXPECT_EQ(b.token, 3) << "-0 and +0 are one key; the first leads";
                    }
                } else {
                    differ += b.token != a.token;
                }
                const double scale = std::max(1.0, std::abs(static_cast<double>(a.logprob)));
                if (b.token == a.token) {
                    EXPECT_NEAR(b.logprob, a.logprob, 1e-5 * scale) << where;
                }
                ASSERT_EQ(b.n_top, a.n_top) << where;
                for (int i = 0; i < a.n_top; ++i) {
                    EXPECT_EQ(b.top_token[i], a.top_token[i]) << where << " alternative " << i;
                    EXPECT_NEAR(b.top_logprob[i], a.top_logprob[i], 1e-5 * std::max(1.0, std::abs(static_cast<double>(a.top_logprob[i]))))
                        << where << " alternative " << i;
                }
            }
        }
    }
    EXPECT_LE(differ * 200, draws) << differ << " of " << draws << " draws differ";
}

TEST_F(CudaSample, ASeedGivesTheSameTokensEveryRun) {
    const int64_t rows = 16, cols = 50000;
    std::mt19937_64 rng(3);
    std::normal_distribution<float> logit(0.0f, 2.0f);
    std::vector<float> l(static_cast<size_t>(rows * cols));
    for (auto& x : l) x = logit(rng);
    std::vector<RowSampling> h(static_cast<size_t>(rows));
    for (size_t r = 0; r < h.size(); ++r) h[r].u = (static_cast<double>(r) + 0.5) / static_cast<double>(rows);
    std::vector<SampledRow> first(static_cast<size_t>(rows)), again(static_cast<size_t>(rows));
    DeviceTensor a(*gpu_, l, rows, cols), b(*gpu_, l, rows, cols);
    gpu_->sample_rows(a.t, h, {}, first.data());
    gpu_->sample_rows(b.t, h, {}, again.data());
    for (size_t r = 0; r < h.size(); ++r) EXPECT_EQ(first[r].token, again[r].token) << "row " << r;
}

TEST_F(CudaSample, BrokenRowsComeBackAsStatuses) {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> l = {1.0f, std::nanf(""), 2.0f, -inf, -inf, -inf, 3.0f, inf, 0.0f};
    std::vector<RowSampling> h(3);
    std::vector<SampledRow> got(3);
    DeviceTensor dl(*gpu_, l, 3, 3);
    gpu_->sample_rows(dl.t, h, {}, got.data());
    EXPECT_EQ(got[0].status, SampledRow::nan_logits);
    EXPECT_EQ(got[1].status, SampledRow::no_finite_max);
    EXPECT_EQ(got[2].status, SampledRow::no_finite_max);
    EXPECT_THROW(from_device(got[0]), Error);
}
#else
TEST(CudaSample, SkippedInABuildWithoutCuda) { GTEST_SKIP() << cuda_backend_unavailable(0); }
#endif

}  // namespace
}  // namespace tps
