// The link model's fit: timings made from known alpha and beta give them back; timings where the
// large message is not slower are refused rather than turned into a nonsense profile, and a
// latency the timings cannot resolve is bounded, never 0.
#include "tpserve/comm/link_probe.h"

#include "tpserve/common/error.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

TEST(LinkProbe, FitRecoversAlphaAndBeta) {
    const double alpha = 20e-6, beta = 25e9;
    for (int n : {2, 3, 4, 8}) {
        const double f = 2.0 * (n - 1) / n;
        const LinkTiming small{8 << 10, alpha + f * (8 << 10) / beta};
        const LinkTiming large{32 << 20, alpha + f * (32 << 20) / beta};
        const AlphaBeta ab = fit_all_reduce(n, small, large);
        EXPECT_NEAR(ab.alpha, alpha, 1e-12) << n;
        EXPECT_NEAR(ab.beta / beta, 1.0, 1e-9) << n;
    }
    const AlphaBeta s = fit_send({8 << 10, 5e-6 + (8 << 10) / 10e9}, {32 << 20, 5e-6 + (32 << 20) / 10e9});
    EXPECT_NEAR(s.alpha, 5e-6, 1e-12);
    EXPECT_NEAR(s.beta / 10e9, 1.0, 1e-9);
}

TEST(LinkProbe, NoiseIsRefused) {
    EXPECT_THROW(fit_send({8 << 10, 1e-3}, {32 << 20, 1e-3}), Error);
    EXPECT_THROW(fit_all_reduce(1, {8 << 10, 1e-6}, {32 << 20, 1e-3}), Error);
    EXPECT_THROW(fit_send({8 << 10, 0.0}, {32 << 20, 1e-3}), Error);
    // a small message faster than the fitted bandwidth allows: the latency is unresolved, and
    // bounded by the small message's time, never 0 or negative (tpserve plan refuses a profile
    // whose alpha is not positive; mpi_cuda once wrote one on a loaded machine)
    const AlphaBeta fast = fit_send({8 << 10, 1e-9}, {32 << 20, 1e-3});
    EXPECT_EQ(fast.alpha, 1e-9);
    const AlphaBeta ar = fit_all_reduce(2, {8 << 10, 2e-7}, {32 << 20, 1e-3});
    EXPECT_EQ(ar.alpha, 2e-7);
}

}  // namespace
}  // namespace tps
