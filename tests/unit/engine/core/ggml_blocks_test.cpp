// The GGML block formats against gguf-py: random blocks (tests/fixtures/gguf/blocks.json, made by
// make_block_references.py) decoded by the engine's scalar reader and by the AVX2 loads (8 and 16
// elements at a time), held to gguf-py's values; and the engine's own quantizers (f32_to_row, for --format and
// random weights) read back within each format's rounding.
#include "../../../../engine/src/cpu/kernels.h"
#include "../../../../engine/src/cpu/simd.h"

#include "support/hf_reference.h"
#include "tpserve/common/check.h"
#include "tpserve/engine/weights.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <random>

namespace tps {
namespace {

struct Blocks {
    DType type = DType::f32;
    int64_t elements = 0;  // per block
    int64_t count = 0;
    std::string bytes;
    std::vector<float> values;  // gguf-py's
};

std::vector<Blocks> load_blocks() {
    std::ifstream in(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/gguf/blocks.json");
    const auto j = nlohmann::json::parse(in);
    std::vector<Blocks> out;
    for (const auto& f : j.at("formats")) {
        Blocks b;
        b.type = *parse_dtype(f.at("type").get<std::string>());
        b.elements = f.at("block_elements").get<int64_t>();
        b.count = f.at("blocks").get<int64_t>();
        b.bytes = testing::decode_base64(f.at("bytes").get<std::string>());
        b.values = testing::decode_base64_floats(f.at("values").get<std::string>());
        out.push_back(std::move(b));
    }
    return out;
}

TEST(GgmlBlocks, ScalarDecoderEqualsGgufPy) {
    const auto all = load_blocks();
    ASSERT_EQ(all.size(), 12u);
    for (const Blocks& b : all) {
        SCOPED_TRACE(std::string(dtype_name(b.type)));
        ASSERT_TRUE(engine_supports(b.type));
        ASSERT_EQ(static_cast<int64_t>(b.bytes.size()), b.count * *matrix_bytes(b.type, 1, b.elements));
        ASSERT_EQ(static_cast<int64_t>(b.values.size()), b.count * b.elements);
        // the blocks as one row, read whole and from every block boundary
        const auto* row = reinterpret_cast<const std::byte*>(b.bytes.data());
        std::vector<float> out(b.values.size(), std::numeric_limits<float>::quiet_NaN());
        row_to_f32(b.type, row, 0, b.count * b.elements, out.data());
        for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], b.values[i]) << "element " << i;
        std::vector<float> tail(static_cast<size_t>(2 * b.elements));
        row_to_f32(b.type, row, 3 * b.elements, 2 * b.elements, tail.data());
        for (size_t i = 0; i < tail.size(); ++i) ASSERT_EQ(tail[i], b.values[static_cast<size_t>(3 * b.elements) + i]);
    }
}

// Every element through Load8 (by8; the formats that have one) or Load16.
template <DType T, bool HasLoad8 = false>
TPS_AVX2 void load_all(const std::byte* row, int64_t n, bool by8, float* out) {
    for (int64_t k = 0; k < n; k += 16) {
        __m256 w0, w1;
        if constexpr (HasLoad8) {
            if (by8) {
                w0 = cpu::Load8<T>::at(row, k);
                w1 = cpu::Load8<T>::at(row, k + 8);
            } else {
                cpu::Load16<T>::at(row, k, w0, w1);
            }
        } else {
            cpu::Load16<T>::at(row, k, w0, w1);
        }
        _mm256_storeu_ps(out + k, w0);
        _mm256_storeu_ps(out + k + 8, w1);
    }
}

TPS_AVX2 void load_all(DType t, const std::byte* row, int64_t n, bool by8, float* out) {
    switch (t) {
        case DType::q8_0: return load_all<DType::q8_0, true>(row, n, by8, out);
        case DType::q4_0: return load_all<DType::q4_0, true>(row, n, by8, out);
        case DType::q4_1: return load_all<DType::q4_1, true>(row, n, by8, out);
        case DType::q5_0: return load_all<DType::q5_0>(row, n, by8, out);
        case DType::q5_1: return load_all<DType::q5_1>(row, n, by8, out);
        case DType::q2_k: return load_all<DType::q2_k>(row, n, by8, out);
        case DType::q3_k: return load_all<DType::q3_k>(row, n, by8, out);
        case DType::q4_k: return load_all<DType::q4_k>(row, n, by8, out);
        case DType::q5_k: return load_all<DType::q5_k>(row, n, by8, out);
        case DType::q6_k: return load_all<DType::q6_k>(row, n, by8, out);
        case DType::iq4_nl: return load_all<DType::iq4_nl>(row, n, by8, out);
        case DType::iq4_xs: return load_all<DType::iq4_xs>(row, n, by8, out);
        default: FAIL() << "no loader for " << dtype_name(t);
    }
}

TEST(GgmlBlocks, Avx2LoadsEqualGgufPy) {
    if (!cpu::have_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
    for (const Blocks& b : load_blocks()) {
        for (bool by8 : {true, false}) {
            if (by8 && b.type != DType::q8_0 && b.type != DType::q4_0 && b.type != DType::q4_1) continue;  // (no Load8)
            SCOPED_TRACE(std::string(dtype_name(b.type)) + (by8 ? " Load8" : " Load16"));
            std::vector<float> out(b.values.size(), std::numeric_limits<float>::quiet_NaN());
            load_all(b.type, reinterpret_cast<const std::byte*>(b.bytes.data()), static_cast<int64_t>(out.size()), by8,
                     out.data());
            // exact: the loads fuse d * scale * q - m into one FMA, but every product there fits
            // in a float's 24 bits (an f16 times a 6- or 8-bit scale times a quant of 3 to 7), so
            // the one rounding left is the same as gguf-py's
            for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], b.values[i]) << "element " << i;
        }
    }
}

// Largest error a round trip may leave, relative to the largest |x| of the block. Asymmetric
// formats: half a level of the widest sub-block range, plus the rounding of the stored sub-block
// scale and min. Symmetric ones map the largest magnitude to the most negative level (-8 of
// -8..7), so a value of the other sign as large sits one whole level off. The legacy formats
// quantize with the exact scale and store it as f16: up to 2^-11 of the largest level more.
double round_trip_bound(DType t) {
    const double f16_scale = 1.0 / 2048;
    switch (t) {
        case DType::q8_0: return 0.5 / 127 + f16_scale;
        case DType::q4_0: return 1.0 / 8 + f16_scale;
        case DType::q4_1: return 0.5 * 2 / 15 + 2 * f16_scale;
        case DType::q5_0: return 1.0 / 16 + f16_scale;
        case DType::q5_1: return 0.5 * 2 / 31 + 2 * f16_scale;
        case DType::q6_k: return 1.0 / 32 + 1.0 / 127;  // a sub-block scale is 1 of +-127 steps
        case DType::q3_k: return 1.0 / 4 + 1.0 / 31;    // 1 of +-31 steps
        case DType::q5_k: return 0.5 * 2 / 31 + 2.0 / 63;
        case DType::q4_k: return 0.5 * 2 / 15 + 2.0 / 63;
        case DType::q2_k: return 0.5 * 2 / 3 + 2.0 / 15;
        default: return 0;
    }
}

TEST(GgmlBlocks, QuantizersReadBackWithinTheirRounding) {
    std::mt19937 rng(17);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (DType t : {DType::q8_0, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::q2_k, DType::q3_k,
                    DType::q4_k, DType::q5_k, DType::q6_k}) {
        SCOPED_TRACE(std::string(dtype_name(t)));
        const int64_t block = dtype_layout(t).block;
        const int64_t n = 16 * block;
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = normal(rng);
        // a block of zeros, a block of one sign, and one block with a lone large value
        std::fill(x.begin(), x.begin() + block, 0.0f);
        for (int64_t i = block; i < 2 * block; ++i) x[static_cast<size_t>(i)] = std::abs(x[static_cast<size_t>(i)]) + 0.01f;
        x[static_cast<size_t>(2 * block + 7)] = 0.5f;
        std::vector<std::byte> row(static_cast<size_t>(*matrix_bytes(t, 1, n)));
        f32_to_row(t, x.data(), n, row.data());
        std::vector<float> back(static_cast<size_t>(n));
        row_to_f32(t, row.data(), 0, n, back.data());
        double sq_err = 0, sq = 0;
        for (int64_t b = 0; b < n / block; ++b) {
            float amax = 0;
            for (int64_t i = 0; i < block; ++i) amax = std::max(amax, std::abs(x[static_cast<size_t>(b * block + i)]));
            for (int64_t i = b * block; i < (b + 1) * block; ++i) {
                const double err = std::abs(back[static_cast<size_t>(i)] - x[static_cast<size_t>(i)]);
                ASSERT_LE(err, round_trip_bound(t) * amax + 1e-7) << "element " << i << " of block " << b;
                if (b >= 3) {
                    sq_err += err * err;
                    sq += double{x[static_cast<size_t>(i)]} * x[static_cast<size_t>(i)];
                }
            }
        }
        for (int64_t i = 0; i < block; ++i) EXPECT_EQ(back[static_cast<size_t>(i)], 0.0f);  // zeros stay zeros
        // on Gaussian blocks, the error is well under the bound: an RMS a 4-bit format cannot beat by much
        const double rel_rms = std::sqrt(sq_err / sq);
        const double limit = t == DType::q2_k ? 0.35 : t == DType::q3_k ? 0.2 : t == DType::q8_0 ? 0.01 : 0.12;
        EXPECT_LT(rel_rms, limit);
        std::printf("%s: relative RMS error %.4f\n", std::string(dtype_name(t)).c_str(), rel_rms);
    }
}

TEST(GgmlBlocks, FormatsTheEngineDoesNotReadAreRefusedByName) {
    std::vector<std::byte> blk(66);
    float out[256];
    try {
        row_to_f32(DType::iq2_xxs, blk.data(), 0, 256, out);
        FAIL() << "iq2_xxs decoded";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("iq2_xxs"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("q4_k"), std::string::npos) << e.what();  // names what is read
    }
    EXPECT_THROW(f32_to_row(DType::iq2_xxs, out, 256, blk.data()), InputError);
    EXPECT_THROW(f32_to_row(DType::q4_k, out, 128, blk.data()), Error);  // not a whole super-block
    // the i-quants are read, never written (no quantizer here)
    EXPECT_TRUE(engine_supports(DType::iq4_xs));
    EXPECT_FALSE(engine_stores(DType::iq4_xs));
    std::vector<std::byte> xs(136);
    EXPECT_THROW(f32_to_row(DType::iq4_xs, out, 256, xs.data()), InputError);
}

}  // namespace
}  // namespace tps
