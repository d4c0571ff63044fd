// Half and bfloat16 conversions against the CPU's own F16C instructions, over every half value
// and a spread of floats (round to nearest even, subnormals, overflow, NaN).
#include "tpserve/engine/numeric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <immintrin.h>
#include <random>

namespace tps {
namespace {

__attribute__((target("f16c"))) float hw_half_to_float(uint16_t h) { return _cvtsh_ss(h); }
__attribute__((target("f16c"))) uint16_t hw_float_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

TEST(Numeric, EveryHalfConvertsExactly) {
    if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU to compare with";
    for (uint32_t h = 0; h < 65536; ++h) {
        const float mine = f16_to_f32(static_cast<uint16_t>(h));
        const float hw = hw_half_to_float(static_cast<uint16_t>(h));
        if (std::isnan(hw)) {
            EXPECT_TRUE(std::isnan(mine)) << h;
        } else {
            EXPECT_EQ(std::bit_cast<uint32_t>(mine), std::bit_cast<uint32_t>(hw)) << h;
        }
    }
}

TEST(Numeric, FloatsRoundToHalfAsTheHardwareDoes) {
    if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU to compare with";
    std::mt19937 rng(7);
    std::uniform_int_distribution<uint32_t> bits;
    int checked = 0;
    for (int i = 0; i < 2000000; ++i) {
        const float f = std::bit_cast<float>(bits(rng));
        if (std::isnan(f)) continue;
        ASSERT_EQ(f32_to_f16(f), hw_float_to_half(f)) << f;
        ++checked;
    }
    for (float f : {0.0f, -0.0f, 65504.0f, 65520.0f, 1e-8f, 5.96e-8f, 2.98e-8f, 6.1e-5f, 1.0f / 3}) {
        EXPECT_EQ(f32_to_f16(f), hw_float_to_half(f)) << f;
    }
    EXPECT_GT(checked, 1900000);
}

TEST(Numeric, Bfloat16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
    // 1 + 2^-8 is exactly between two bf16 values: ties to even (down)
    EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
    // 1 + 3 * 2^-8: ties to even (up)
    EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
}

}  // namespace
}  // namespace tps
