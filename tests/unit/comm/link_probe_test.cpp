// The link model's fit: timings made from known alpha and beta give them back; timings where the
// large message is not slower are refused rather than turned into a nonsense profile.
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
    // a small message slower than its fit allows gives alpha 0, never negative
    EXPECT_GE(fit_send({8 << 10, 1e-9}, {32 << 20, 1e-3}).alpha, 0.0);
}

}  // namespace
}  // namespace tps
