// Every CPU kernel against its reference: the AVX2 matmul for every weight format on random
// shapes (odd row counts, tails, 1..20 tokens), and the backend's ops against direct formulas.
// Outputs are poisoned first, so an element a kernel fails to write is caught.
#include "../../../../engine/src/cpu/kernels.h"

#include "safetensors_writer.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/numeric.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace tps {
namespace {

// Byte offsets of a GGML block's f16 scale fields (weights/ggml_blocks.cpp has the layouts).
std::vector<int> half_fields(DType type) {
    switch (type) {
        case DType::q4_1: case DType::q5_1: case DType::q4_k: case DType::q5_k: return {0, 2};
        case DType::q2_k: return {80, 82};
        case DType::q3_k: return {108};
        case DType::q6_k: return {208};
        default: return {0};  // q8_0, q4_0, q5_0, iq4_nl, iq4_xs
    }
}

// A weight of `rows` x `cols` in `type` (random floats; the block formats random blocks), with its
// exact f32 values.
struct TestWeight {
    Weight w;
    std::vector<float> dense;  // what the stored values mean
};

TestWeight make_weight(DType type, int64_t rows, int64_t cols, uint64_t seed) {
    const auto v = test::random_values(static_cast<size_t>(rows * cols), seed, 0.5f);
    TestWeight t;
    t.w.type = type;
    t.w.rows = rows;
    t.w.cols = cols;
    // int8: the values alone in the rows, the f16 scales after the last row
    t.w.row_bytes = type == DType::int8 ? cols : *matrix_bytes(type, 1, cols);
    t.w.owned = Buffer(rows * t.w.row_bytes + (type == DType::int8 ? 2 * rows : 0), MemoryTag::workspace);
    auto* out = t.w.owned.as<std::byte>();
    std::vector<float> row_scale(static_cast<size_t>(rows), 1.0f);
    for (int64_t r = 0; r < rows; ++r) {
        std::byte* row = out + r * t.w.row_bytes;
        const float* src = v.data() + r * cols;
        if (type == DType::int8) {
            // symmetric per row: the largest magnitude maps to 127
            float amax = 0;
            for (int64_t i = 0; i < cols; ++i) amax = std::max(amax, std::abs(src[i]));
            uint16_t sh = f32_to_f16(amax / 127.0f);
            if (f16_to_f32(sh) * 127.0f < amax) ++sh;
            const float s = f16_to_f32(sh);
            std::memcpy(out + rows * cols + 2 * r, &sh, 2);
            row_scale[static_cast<size_t>(r)] = s;
            for (int64_t i = 0; i < cols; ++i) {
                const auto q = static_cast<int8_t>(std::lround(src[i] / s));
                std::memcpy(row + i, &q, 1);
            }
        } else if (type == DType::f32) {
            std::memcpy(row, src, static_cast<size_t>(cols) * 4);
        } else if (type == DType::f16 || type == DType::bf16) {
            for (int64_t i = 0; i < cols; ++i) {
                const uint16_t h = type == DType::f16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
                std::memcpy(row + 2 * i, &h, 2);
            }
        } else {
            // random block bytes (every pattern of quants and packed scales), the f16 scale fields
            // random finite values of the weights' size
            std::mt19937 bits(static_cast<uint32_t>(seed * 131 + static_cast<uint64_t>(r)));
            for (int64_t i = 0; i < t.w.row_bytes; ++i) row[i] = static_cast<std::byte>(bits() & 0xFF);
            const int64_t block_bytes = dtype_layout(type).block_bits / 8;
            std::uniform_real_distribution<float> scale(-0.02f, 0.02f);
            for (int64_t b = 0; b < t.w.row_bytes / block_bytes; ++b) {
                for (int off : half_fields(type)) {
                    const uint16_t h = f32_to_f16(scale(bits));
                    std::memcpy(row + b * block_bytes + off, &h, 2);
                }
            }
        }
    }
    t.w.data = t.w.owned.as<const std::byte>();
    t.dense.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
        row_to_f32(type, t.w.row(r), 0, cols, t.dense.data() + r * cols);
        for (int64_t i = 0; i < cols; ++i) t.dense[static_cast<size_t>(r * cols + i)] *= row_scale[static_cast<size_t>(r)];
    }
    return t;
}

class Matmul : public ::testing::TestWithParam<DType> {};

TEST_P(Matmul, Avx2EqualsTheReferenceOnRandomShapes) {
    if (!cpu::have_avx2()) GTEST_SKIP() << "no AVX2 on this CPU: only the reference runs here";
    const DType type = GetParam();
    const bool blocks = dtype_layout(type).block > 1;
    std::mt19937 rng(static_cast<uint32_t>(type) + 1);
    for (int trial = 0; trial < 40; ++trial) {
        const int64_t rows = 1 + static_cast<int64_t>(rng() % 67);
        const int64_t block = dtype_layout(type).block;
        const int64_t cols = blocks ? block * (1 + static_cast<int64_t>(rng() % (block == 32 ? 12 : 4)))
                                    : 1 + static_cast<int64_t>(rng() % 200);
        const int64_t tokens = 1 + static_cast<int64_t>(rng() % 20);  // (past 12: block formats expand rows once)
        const TestWeight tw = make_weight(type, rows, cols, 100 + static_cast<uint64_t>(trial));
        const auto x = test::random_values(static_cast<size_t>(tokens * cols), 500 + static_cast<uint64_t>(trial));
        std::vector<float> fast(static_cast<size_t>(tokens * rows), std::numeric_limits<float>::quiet_NaN());
        std::vector<float> ref(fast.size(), std::numeric_limits<float>::quiet_NaN());
        cpu::matmul_rows(tw.w, 0, rows, x.data(), cols, tokens, fast.data(), rows);
        cpu::matmul_rows_reference(tw.w, 0, rows, x.data(), cols, tokens, ref.data(), rows);
        for (size_t i = 0; i < fast.size(); ++i) {
            // normalised error: relative to the size of the terms summed, not the (possibly tiny) result
            const int64_t t = static_cast<int64_t>(i) / rows;
            const int64_t r = static_cast<int64_t>(i) % rows;
            double scale = 0;
            for (int64_t k = 0; k < cols; ++k) scale += std::abs(tw.dense[static_cast<size_t>(r * cols + k)] * x[static_cast<size_t>(t * cols + k)]);
            ASSERT_FALSE(std::isnan(fast[i])) << "unwritten output " << i;
            ASSERT_NEAR(fast[i], ref[i], 1e-5 * (scale + 1e-6)) << dtype_name(type) << " " << rows << "x" << cols << " t" << tokens;
        }
    }
}

TEST_P(Matmul, ReferenceComputesWithTheValuesAsStored) {
    // the reference (and so every kernel held against it) reads each format as this file's own
    // quantizers define it: int8's row scale included
    const DType type = GetParam();
    const bool blocks = dtype_layout(type).block > 1;
    const int64_t rows = 13, cols = blocks ? 3 * dtype_layout(type).block : 77, tokens = 3;
    const TestWeight tw = make_weight(type, rows, cols, 7);
    const auto x = test::random_values(static_cast<size_t>(tokens * cols), 8);
    std::vector<float> ref(static_cast<size_t>(tokens * rows), std::numeric_limits<float>::quiet_NaN());
    cpu::matmul_rows_reference(tw.w, 0, rows, x.data(), cols, tokens, ref.data(), rows);
    for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
            double want = 0, scale = 0;
            for (int64_t k = 0; k < cols; ++k) {
                const double term = double{tw.dense[static_cast<size_t>(r * cols + k)]} * x[static_cast<size_t>(t * cols + k)];
                want += term;
                scale += std::abs(term);
            }
            EXPECT_NEAR(ref[static_cast<size_t>(t * rows + r)], want, 1e-6 * (scale + 1e-6)) << dtype_name(type) << " row " << r;
        }
    }
}

TEST_P(Matmul, EveryTokenGetsTheSameBitsWhateverItsBatch) {
    // batch invariance: a token's products are the same bits alone, beside 3 others (decode) and
    // among 13 (prefill's token groups), for every format
    if (!cpu::have_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
    const DType type = GetParam();
    const bool blocks = dtype_layout(type).block > 1;
    const int64_t rows = 37, cols = blocks ? (dtype_layout(type).block == 32 ? 320 : 512) : 333, tokens = 13;
    const TestWeight tw = make_weight(type, rows, cols, 21);
    const auto x = test::random_values(static_cast<size_t>(tokens * cols), 22);
    std::vector<float> all(static_cast<size_t>(tokens * rows)), four(static_cast<size_t>(4 * rows)), one(static_cast<size_t>(rows));
    cpu::matmul_rows(tw.w, 0, rows, x.data(), cols, tokens, all.data(), rows);
    cpu::matmul_rows(tw.w, 0, rows, x.data() + 5 * cols, cols, 4, four.data(), rows);  // tokens 5..8
    for (int64_t t = 0; t < tokens; ++t) {
        cpu::matmul_rows(tw.w, 0, rows, x.data() + t * cols, cols, 1, one.data(), rows);
        for (int64_t r = 0; r < rows; ++r) {
            ASSERT_EQ(one[static_cast<size_t>(r)], all[static_cast<size_t>(t * rows + r)]) << dtype_name(type) << " token " << t;
            if (t >= 5 && t < 9) {
                ASSERT_EQ(one[static_cast<size_t>(r)], four[static_cast<size_t>((t - 5) * rows + r)]);
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Formats, Matmul,
                         ::testing::Values(DType::f32, DType::f16, DType::bf16, DType::int8, DType::q8_0, DType::q4_0,
                                           DType::q4_1, DType::q5_0, DType::q5_1, DType::q2_k, DType::q3_k, DType::q4_k,
                                           DType::q5_k, DType::q6_k, DType::iq4_nl, DType::iq4_xs),
                         [](const ::testing::TestParamInfo<DType>& p) { return std::string(dtype_name(p.param)); });

TEST(Matmul, QuantizedBlocksDecodeAsGgmlDefinesThem) {
    // one q4_0 block: d = 0.5, byte j holds element j (low nibble) and j + 16 (high nibble)
    std::vector<std::byte> blk(18);
    const uint16_t d = f32_to_f16(0.5f);
    std::memcpy(blk.data(), &d, 2);
    for (int j = 0; j < 16; ++j) blk[2 + static_cast<size_t>(j)] = static_cast<std::byte>(j | ((15 - j) << 4));
    float out[32];
    row_to_f32(DType::q4_0, blk.data(), 0, 32, out);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(out[j], 0.5f * static_cast<float>(j - 8));
        EXPECT_EQ(out[16 + j], 0.5f * static_cast<float>(15 - j - 8));
    }
}

TEST(Backend, ElementwiseOpsMatchTheirFormulas) {
    auto be = make_cpu_backend(2);
    const int64_t rows = 5, cols = 24;
    auto mem = be->allocate(4 * rows * cols * 4, MemoryTag::workspace);
    Tensor a{mem->data(), DType::f32, rows, cols};
    Tensor b{static_cast<float*>(mem->data()) + rows * cols, DType::f32, rows, cols};
    Tensor c{static_cast<float*>(mem->data()) + 2 * rows * cols, DType::f32, rows, cols};
    const auto va = test::random_values(static_cast<size_t>(rows * cols), 1);
    const auto vb = test::random_values(static_cast<size_t>(rows * cols), 2);
    std::copy(va.begin(), va.end(), a.f32());
    std::copy(vb.begin(), vb.end(), b.f32());
    Vec w;
    w.n = cols;
    w.buf = Buffer(cols * 4, MemoryTag::workspace);
    const auto vw = test::random_values(static_cast<size_t>(cols), 3);
    std::copy(vw.begin(), vw.end(), w.buf.as<float>());

    be->rmsnorm(a, w, 1e-5f, c);
    for (int64_t r = 0; r < rows; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < cols; ++i) ss += va[static_cast<size_t>(r * cols + i)] * va[static_cast<size_t>(r * cols + i)];
        const double inv = 1.0 / std::sqrt(ss / cols + 1e-5);
        for (int64_t i = 0; i < cols; ++i) {
            EXPECT_NEAR(c.f32()[r * cols + i], vw[static_cast<size_t>(i)] * va[static_cast<size_t>(r * cols + i)] * inv, 1e-5);
        }
    }
    be->swiglu(a, b, c);
    for (int64_t i = 0; i < rows * cols; ++i) {
        const double g = va[static_cast<size_t>(i)];
        EXPECT_NEAR(c.f32()[i], g / (1 + std::exp(-g)) * vb[static_cast<size_t>(i)], 1e-5);
    }
    be->add(a, b);
    for (int64_t i = 0; i < rows * cols; ++i) EXPECT_FLOAT_EQ(a.f32()[i], va[static_cast<size_t>(i)] + vb[static_cast<size_t>(i)]);
}

TEST(Backend, RopeRotatesPairsByPosition) {
    auto be = make_cpu_backend(1);
    const int64_t hd = 8, heads = 2;
    auto mem = be->allocate(2 * heads * hd * 4, MemoryTag::workspace);
    Tensor x{mem->data(), DType::f32, 2, heads * hd};
    const auto v = test::random_values(static_cast<size_t>(2 * heads * hd), 4);
    for (bool adjacent : {false, true}) {
        std::copy(v.begin(), v.end(), x.f32());
        RopeTable t;
        t.rotary_dims = hd;
        t.adjacent_pairs = adjacent;
        t.inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
        const std::vector<int32_t> pos = {0, 7};
        be->rope(x, hd, t, pos);
        for (int64_t tok = 0; tok < 2; ++tok) {
            for (int64_t h = 0; h < heads; ++h) {
                for (int64_t i = 0; i < hd / 2; ++i) {
                    const int64_t a = adjacent ? 2 * i : i;
                    const int64_t b = adjacent ? 2 * i + 1 : i + hd / 2;
                    const float angle = t.inv_freq[static_cast<size_t>(i)] * static_cast<float>(pos[static_cast<size_t>(tok)]);
                    const float x1 = v[static_cast<size_t>(tok * heads * hd + h * hd + a)];
                    const float x2 = v[static_cast<size_t>(tok * heads * hd + h * hd + b)];
                    EXPECT_NEAR(x.f32()[tok * heads * hd + h * hd + a], x1 * std::cos(angle) - x2 * std::sin(angle), 1e-6);
                    EXPECT_NEAR(x.f32()[tok * heads * hd + h * hd + b], x2 * std::cos(angle) + x1 * std::sin(angle), 1e-6);
                }
            }
        }
    }
}

TEST(Backend, PagedAttentionEqualsDenseSoftmaxAttention) {
    // 2 sequences, GQA 4 query heads over 2 KV heads, blocks scattered in the pool; the AVX2 and
    // the scalar kernels both
    auto be = make_cpu_backend(2);
    for (bool scalar : {false, true})
    for (DType kv_type : {DType::f32, DType::f16, DType::bf16}) {
        cpu::force_scalar(scalar);
        KvLayout L;
        L.layers = 1;
        L.kv_heads = 2;
        L.head_dim = 8;
        L.blocks = 8;
        L.dtype = kv_type;
        const int64_t heads = 4;
        const int64_t elem = kv_type == DType::f32 ? 4 : 2;
        auto kv = be->allocate(2 * L.blocks * L.block_tokens * L.token_stride() * elem, MemoryTag::kv_cache);
        const std::vector<int32_t> blocks_a = {5, 2, 7};  // 40 tokens
        const std::vector<int32_t> blocks_b = {0};
        const std::vector<int64_t> lens = {40, 9};
        // store every position of both sequences
        StepLayout all;
        all.sequences = {{blocks_a.data(), 3}, {blocks_b.data(), 1}};
        for (int s = 0; s < 2; ++s) {
            for (int32_t p = 0; p < lens[static_cast<size_t>(s)]; ++p) {
                all.positions.push_back(p);
                all.sequence.push_back(s);
            }
        }
        const auto n = static_cast<int64_t>(all.positions.size());
        auto buf = be->allocate(n * L.token_stride() * 4 * 2 + 2 * heads * L.head_dim * 4 * 2, MemoryTag::workspace);
        auto* f = static_cast<float*>(buf->data());
        Tensor k{f, DType::f32, n, L.token_stride()};
        Tensor v{f + n * L.token_stride(), DType::f32, n, L.token_stride()};
        const auto kv_vals = test::random_values(static_cast<size_t>(2 * n * L.token_stride()), 9);
        std::copy(kv_vals.begin(), kv_vals.end(), k.f32());
        be->kv_store(*kv, L, 0, k, v, all);
        // one query per sequence, at its last position
        Tensor q{f + 2 * n * L.token_stride(), DType::f32, 2, heads * L.head_dim};
        Tensor out{q.f32() + 2 * heads * L.head_dim, DType::f32, 2, heads * L.head_dim};
        const auto qv = test::random_values(static_cast<size_t>(2 * heads * L.head_dim), 10);
        std::copy(qv.begin(), qv.end(), q.f32());
        std::fill(out.f32(), out.f32() + 2 * heads * L.head_dim, std::numeric_limits<float>::quiet_NaN());
        StepLayout step;
        step.sequences = all.sequences;
        step.positions = {static_cast<int32_t>(lens[0] - 1), static_cast<int32_t>(lens[1] - 1)};
        step.sequence = {0, 1};
        be->attention(q, *kv, L, 0, step, heads, out);
        // dense reference from the values as stored (rounded to the KV type)
        auto stored = [&](float x) {
            return kv_type == DType::f32 ? x : kv_type == DType::f16 ? f16_to_f32(f32_to_f16(x)) : bf16_to_f32(f32_to_bf16(x));
        };
        int64_t base = 0;
        for (int s = 0; s < 2; ++s) {
            for (int64_t h = 0; h < heads; ++h) {
                const int64_t g = h / 2;
                std::vector<double> sc;
                for (int64_t p = 0; p < lens[static_cast<size_t>(s)]; ++p) {
                    double d = 0;
                    for (int64_t i = 0; i < L.head_dim; ++i) {
                        d += qv[static_cast<size_t>(s * heads * L.head_dim + h * L.head_dim + i)] *
                             stored(kv_vals[static_cast<size_t>((base + p) * L.token_stride() + g * L.head_dim + i)]);
                    }
                    sc.push_back(d / std::sqrt(8.0));
                }
                const double mx = *std::max_element(sc.begin(), sc.end());
                double z = 0;
                for (double& x : sc) z += (x = std::exp(x - mx));
                for (int64_t i = 0; i < L.head_dim; ++i) {
                    double o = 0;
                    for (int64_t p = 0; p < lens[static_cast<size_t>(s)]; ++p) {
                        o += sc[static_cast<size_t>(p)] / z *
                             stored(kv_vals[static_cast<size_t>(n * L.token_stride() + (base + p) * L.token_stride() + g * L.head_dim + i)]);
                    }
                    EXPECT_NEAR(out.f32()[s * heads * L.head_dim + h * L.head_dim + i], o, 1e-5) << dtype_name(kv_type);
                }
            }
            base += lens[static_cast<size_t>(s)];
        }
    }
    cpu::force_scalar(false);
}

}  // namespace
}  // namespace tps

#include "../../../../engine/src/cpu/simd.h"

namespace tps {
namespace {

TPS_AVX2 void exp8_of(const float* in, float* out) { _mm256_storeu_ps(out, cpu::exp8(_mm256_loadu_ps(in))); }

TEST(Simd, Exp8IsWithinTwoUlpOfExp) {
    if (!cpu::have_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> d(-87.0f, 88.0f);
    float in[8], out[8];
    for (int i = 0; i < 200000; ++i) {
        for (float& x : in) x = i < 1000 ? d(rng) * 0.01f : d(rng);
        exp8_of(in, out);
        for (int j = 0; j < 8; ++j) {
            const double want = std::exp(static_cast<double>(in[j]));
            ASSERT_NEAR(out[j], want, 2.5e-7 * want) << in[j];
        }
    }
    const float edges[8] = {0.0f, -100.0f, 88.0f, -87.0f, 1e-8f, -1e-8f, 1.0f, -1.0f};
    exp8_of(edges, out);
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_LT(out[1], 1e-37f);
    EXPECT_NEAR(out[6], std::exp(1.0f), 1e-6f);
}

}  // namespace
}  // namespace tps
