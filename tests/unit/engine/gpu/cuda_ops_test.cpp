// Every CUDA op against CpuBackend on random shapes and seeded random inputs (never zeros), with
// device outputs poisoned before each run. Error bounds, normalised to the reference's largest
// magnitude: 1e-5 for element-wise ops and f32 products; 1e-4 for attention (different summation
// order over up to 3000 keys) and for decode products of 16-bit and GGML weights (x stays f32);
// prefill products through cuBLAS round x to 16 bits: 1e-2 for bf16 weights (x in bf16), 2e-3 for
// f16, GGML and int8 weights (x in f16, GGML blocks expanded to f16). Skipped with the reason where
// no GPU is usable.
#include "cuda_test_support.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace tps {
namespace {

#if TPS_HAS_CUDA
using testing::DeviceTensor;
using testing::within;

std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// A host weight in `type` made from random floats (quantized as ggml does; int8 with a scale per
// row), and its device copy. The i-quants, which the engine reads but does not write, are random
// blocks: every pattern of quants and packed scales, the f16 d (each block's first two bytes) a
// random finite value of the weights' size.
struct WeightPair {
    Weight host, device;
};

Weight random_blocks(DType type, int64_t rows, int64_t cols, uint64_t seed) {
    Weight w;  // make_weight refuses the formats the engine does not write
    w.type = type;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = weight_row_bytes(type, cols).value();
    w.owned = Buffer(rows * w.row_bytes, MemoryTag::workspace);
    w.data = w.owned.as<const std::byte>();
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> d(-0.01f, 0.01f);
    auto* bytes = w.owned.as<std::byte>();  // make_weight owns its rows
    const int64_t block_bytes = dtype_layout(w.type).block_bits / 8;
    for (int64_t i = 0; i < w.rows * w.row_bytes; ++i) bytes[i] = static_cast<std::byte>(rng() & 0xFF);
    for (int64_t b = 0; b < w.rows * w.row_bytes / block_bytes; ++b) {
        const uint16_t h = f32_to_f16(d(rng));
        std::memcpy(bytes + b * block_bytes, &h, 2);
    }
    return w;
}

WeightPair make_weights(Backend& gpu, DType type, int64_t rows, int64_t cols, uint64_t seed) {
    WeightPair p;
    if (engine_stores(type)) {
        p.host = make_weight(type, rows, cols, MemoryTag::workspace);
        const auto v = random_floats(static_cast<size_t>(rows * cols), seed, 0.5f);
        for (int64_t r = 0; r < rows; ++r) store_row(p.host, r, v.data() + r * cols);
    } else {
        p.host = random_blocks(type, rows, cols, seed);
    }
    p.device = p.host.alias();
    gpu.place(p.device);
    return p;
}

Vec make_vec(const std::vector<float>& v) {
    Vec out;
    out.n = static_cast<int64_t>(v.size());
    out.buf = Buffer(out.n * 4, MemoryTag::workspace);
    std::memcpy(out.buf.data(), v.data(), v.size() * 4);
    return out;
}

class CudaOps : public ::testing::Test {
protected:
    void SetUp() override {
        TPS_REQUIRE_CUDA(gpu_);
        cpu_ = make_cpu_backend(2);
    }
    std::unique_ptr<Backend> gpu_, cpu_;
};

// Every weight format the CUDA kernels read: the plain ones, int8, and the GGML blocks of 32
// (q8_0 .. iq4_nl) and of 256 (the K-quants, iq4_xs).
constexpr DType kPlainFormats[] = {DType::f32, DType::f16, DType::bf16, DType::int8};
constexpr DType kBlockFormats[] = {DType::q8_0, DType::q4_0, DType::q4_1, DType::q5_0, DType::q5_1, DType::iq4_nl,
                                   DType::q2_k, DType::q3_k, DType::q4_k, DType::q5_k, DType::q6_k, DType::iq4_xs};

bool has_min(DType t) {
    return t == DType::q4_1 || t == DType::q5_1 || t == DType::q2_k || t == DType::q4_k || t == DType::q5_k;
}

// The CPU decodes blocks one element at a time (ggml_blocks.cpp) as the GPU does, in the same
// order of operations: equal, but for the formats with a min, where the GPU may fuse
// scale * level - min into one rounding.
void expect_embedding_matches(Backend& gpu, Backend& cpu, DType type) {
    const int64_t cols = dtype_layout(type).block == 256 ? 512 : 96;
    auto w = make_weights(gpu, type, 50, cols, 7);
    const std::vector<int32_t> ids = {10, 3, 49, 60, 10, 0, 9, 75};  // 60 and 75 are outside rows [10, 60)
    std::vector<float> want(ids.size() * static_cast<size_t>(cols));
    cpu.embedding(w.host, 10, ids, Tensor{want.data(), DType::f32, 8, cols});
    DeviceTensor out(gpu, 8, cols);
    gpu.embedding(w.device, 10, ids, out.t);
    EXPECT_TRUE(within(out.host(), want, has_min(type) ? 1e-6 : 0.0)) << dtype_name(type);
}

TEST_F(CudaOps, EmbeddingOfEveryFormatWithRowsOutsideTheShard) {
    for (DType type : kPlainFormats) expect_embedding_matches(*gpu_, *cpu_, type);
    for (DType type : kBlockFormats) expect_embedding_matches(*gpu_, *cpu_, type);
}

TEST_F(CudaOps, RmsNormOnRowsOfSeveralWidths) {
    for (int64_t cols : {1, 63, 576, 4096, 5120}) {
        const auto x = random_floats(static_cast<size_t>(5 * cols), 1 + static_cast<uint64_t>(cols), 3.0f);
        const auto wv = random_floats(static_cast<size_t>(cols), 2);
        Vec wc = make_vec(wv), wg = make_vec(wv);
        gpu_->place(wg);
        std::vector<float> want(x.size());
        cpu_->rmsnorm(Tensor{const_cast<float*>(x.data()), DType::f32, 5, cols}, wc, 1e-5f, Tensor{want.data(), DType::f32, 5, cols});
        DeviceTensor dx(*gpu_, x, 5, cols), out(*gpu_, 5, cols);
        gpu_->rmsnorm(dx.t, wg, 1e-5f, out.t);
        EXPECT_TRUE(within(out.host(), want, 1e-5)) << cols;
    }
}

// The residual add and the norm after it in one kernel: x becomes x + y exactly as add makes it,
// and out is what add then rmsnorm give on the CPU, and on this backend bit for bit.
TEST_F(CudaOps, AddRmsNormIsTheAddThenTheNorm) {
    for (int64_t cols : {1, 63, 576, 5120}) {
        const auto x = random_floats(static_cast<size_t>(5 * cols), 11 + static_cast<uint64_t>(cols), 3.0f);
        const auto y = random_floats(static_cast<size_t>(5 * cols), 12 + static_cast<uint64_t>(cols), 3.0f);
        const auto wv = random_floats(static_cast<size_t>(cols), 13);
        Vec wc = make_vec(wv), wg = make_vec(wv);
        gpu_->place(wg);
        auto sum = x;
        std::vector<float> want(x.size());
        cpu_->add_rmsnorm(Tensor{sum.data(), DType::f32, 5, cols}, Tensor{const_cast<float*>(y.data()), DType::f32, 5, cols},
                          wc, 1e-5f, Tensor{want.data(), DType::f32, 5, cols});
        DeviceTensor dx(*gpu_, x, 5, cols), dy(*gpu_, y, 5, cols), out(*gpu_, 5, cols);
        gpu_->add_rmsnorm(dx.t, dy.t, wg, 1e-5f, out.t);
        EXPECT_EQ(dx.host(), sum) << cols;
        const auto got = out.host();
        EXPECT_TRUE(within(got, want, 1e-5)) << cols;
        // the two ops on this backend
        DeviceTensor ax(*gpu_, x, 5, cols), ay(*gpu_, y, 5, cols), apart(*gpu_, 5, cols);
        gpu_->add(ax.t, ay.t);
        gpu_->rmsnorm(ax.t, wg, 1e-5f, apart.t);
        EXPECT_EQ(got, apart.host()) << cols;
    }
}

struct MatmulCase {
    DType type;
    int64_t rows, cols, tokens;
};
void PrintTo(const MatmulCase& c, std::ostream* os) {
    *os << dtype_name(c.type) << " " << c.rows << "x" << c.cols << ", " << c.tokens << " tokens";
}

class CudaMatmul : public CudaOps, public ::testing::WithParamInterface<MatmulCase> {};

TEST_P(CudaMatmul, MatchesTheCpuBackend) {
    const MatmulCase c = GetParam();
    auto w = make_weights(*gpu_, c.type, c.rows, c.cols, 11);
    const auto x = random_floats(static_cast<size_t>(c.tokens * c.cols), 12);
    std::vector<float> want(static_cast<size_t>(c.tokens * c.rows));
    cpu_->matmul(w.host, Tensor{const_cast<float*>(x.data()), DType::f32, c.tokens, c.cols},
                 Tensor{want.data(), DType::f32, c.tokens, c.rows});
    DeviceTensor dx(*gpu_, x, c.tokens, c.cols), out(*gpu_, c.tokens, c.rows);
    gpu_->matmul(w.device, dx.t, out.t);
    const bool gemm = c.tokens > 8;
    const double bound = c.type == DType::f32 ? 1e-5 : !gemm ? 1e-4 : c.type == DType::bf16 ? 1e-2 : 2e-3;
    EXPECT_TRUE(within(out.host(), want, bound));
}

std::vector<MatmulCase> matmul_cases() {
    std::vector<MatmulCase> out;
    auto add = [&](DType t) {
        // short rows: fewer 16-byte pieces than lanes, or a single super-block of 256
        const int64_t short_cols = dtype_layout(t).block == 256 ? 256 : 96;
        for (int64_t tokens : {1, 2, 3, 5, 8, 9, 33, 130}) {
            out.push_back({t, 67, 256, tokens});   // rows not a multiple of the block's 4 warps
            out.push_back({t, 300, short_cols, tokens});
        }
        out.push_back({t, 1000, 2048, 1});
        out.push_back({t, 1000, 2048, 64});
    };
    for (DType t : kPlainFormats) add(t);
    for (DType t : kBlockFormats) add(t);
    out.push_back({DType::f32, 33, 17, 2});   // odd widths take the scalar path
    out.push_back({DType::f16, 33, 18, 3});
    out.push_back({DType::bf16, 33, 18, 12});
    out.push_back({DType::int8, 33, 24, 3});  // rows of 24 bytes: not 16-byte aligned, the scalar path
    out.push_back({DType::int8, 33, 24, 12});
    // more rows than one expanded slice (64 MiB of f16 = 16384 rows of 2048): the scales of the
    // second slice's rows of y
    out.push_back({DType::int8, 16400, 2048, 20});
    return out;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaMatmul, ::testing::ValuesIn(matmul_cases()),
                         [](const ::testing::TestParamInfo<MatmulCase>& p) {
                             return std::string(dtype_name(p.param.type)) + "_" + std::to_string(p.param.rows) + "x" +
                                    std::to_string(p.param.cols) + "_t" + std::to_string(p.param.tokens);
                         });

// x one float past a 16-byte boundary: the GEMV reads GGML blocks a byte at a time (row_scalar)
TEST_F(CudaOps, DecodeMatmulOfBlocksOnAnUnalignedInput) {
    for (DType type : kBlockFormats) {
        auto w = make_weights(*gpu_, type, 37, 512, 21);
        const auto x = random_floats(3 * 512, 22);
        std::vector<float> want(3 * 37);
        cpu_->matmul(w.host, Tensor{const_cast<float*>(x.data()), DType::f32, 3, 512}, Tensor{want.data(), DType::f32, 3, 37});
        std::vector<float> shifted(x.size() + 1, 0.5f);
        std::copy(x.begin(), x.end(), shifted.begin() + 1);
        DeviceTensor dx(*gpu_, shifted, 1, static_cast<int64_t>(shifted.size())), out(*gpu_, 3, 37);
        gpu_->matmul(w.device, Tensor{static_cast<float*>(dx.t.data) + 1, DType::f32, 3, 512}, out.t);
        EXPECT_TRUE(within(out.host(), want, 1e-4)) << dtype_name(type);
    }
}

// Products of one x in weights of several formats: up to 8 tokens, consecutive ones of a format
// share a GEMV launch, three at most (here 3 + 1 bf16, 2 int8, ...; row counts that leave blocks
// part full); above 8 they share x rounded to 16 bits (bf16 for bf16 weights, f16 for the rest,
// none for f32), converted again only when the type changes. Every product equals the same
// product alone, bit for bit, and the CPU's within bounds.
TEST_F(CudaOps, MatmulMultiWritesEveryProduct) {
    const DType types[] = {DType::bf16, DType::bf16, DType::bf16, DType::bf16, DType::int8, DType::int8,
                           DType::q4_0, DType::f32,  DType::bf16, DType::f16};
    const int64_t rows[] = {64, 32, 5, 40, 48, 20, 40, 24, 16, 56};
    std::vector<WeightPair> w;
    for (size_t i = 0; i < std::size(types); ++i) w.push_back(make_weights(*gpu_, types[i], rows[i], 128, 1 + i));
    for (int64_t tokens : {1, 3, 8, 20}) {
        const auto x = random_floats(static_cast<size_t>(tokens * 128), 3);
        Tensor xc{const_cast<float*>(x.data()), DType::f32, tokens, 128};
        DeviceTensor dx(*gpu_, x, tokens, 128);
        std::vector<DeviceTensor> ys;
        std::vector<Backend::Product> products;
        for (size_t i = 0; i < w.size(); ++i) ys.emplace_back(*gpu_, tokens, rows[i]);
        for (size_t i = 0; i < w.size(); ++i) products.push_back({&w[i].device, ys[i].t});
        gpu_->matmul_multi(dx.t, products);
        for (size_t i = 0; i < w.size(); ++i) {
            std::vector<float> want(static_cast<size_t>(tokens * rows[i]));
            cpu_->matmul(w[i].host, xc, Tensor{want.data(), DType::f32, tokens, rows[i]});
            DeviceTensor alone(*gpu_, tokens, rows[i]);
            gpu_->matmul(w[i].device, dx.t, alone.t);
            const auto got = ys[i].host();
            EXPECT_EQ(got, alone.host()) << dtype_name(types[i]) << " product " << i << ", " << tokens << " tokens";
            const double bound = tokens > 8 ? 1e-2 : 1e-4;
            EXPECT_TRUE(within(got, want, bound)) << dtype_name(types[i]) << " product " << i << ", " << tokens << " tokens";
        }
    }
}

TEST_F(CudaOps, RopeInBothPairLayoutsAndPartialRotation) {
    for (bool adjacent : {false, true}) {
        for (int64_t rotary : {64, 32}) {
            RopeTable table;
            table.rotary_dims = rotary;
            table.adjacent_pairs = adjacent;
            for (int64_t i = 0; i < rotary / 2; ++i) {
                table.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(rotary)));
            }
            const std::vector<int32_t> pos = {0, 1, 17, 300, 4095, 70000};
            auto x = random_floats(6 * 4 * 64, 5);
            auto want = x;
            cpu_->rope(Tensor{want.data(), DType::f32, 6, 256}, 64, table, pos);
            DeviceTensor dx(*gpu_, x, 6, 256);
            gpu_->rope(dx.t, 64, table, pos);
            EXPECT_TRUE(within(dx.host(), want, 1e-5)) << adjacent << " " << rotary;
        }
    }
}

// With a stream wait set (a split model's NcclQueue), the outputs and synchronize() wait through
// it, and a step buffer that grows keeps its old memory until then: cudaFree would wait for the
// stream, behind collectives whose wait has no deadline.
TEST_F(CudaOps, WithAStreamWaitOutputsWaitThroughItAndGrowthFreesAfterIt) {
    int waits = 0;
    gpu_->set_stream_wait([&] {
        ++waits;
        EXPECT_EQ(cudaStreamSynchronize(static_cast<cudaStream_t>(gpu_->native_stream())), cudaSuccess);
    });
    const auto v = random_floats(400 * 8, 7);
    DeviceTensor x(*gpu_, v, 400, 8), out(*gpu_, 400, 8);
    const auto workspace = [] { return MemoryTracker::instance().totals().current[static_cast<size_t>(MemoryTag::workspace)]; };
    std::vector<int64_t> rows = {3};
    gpu_->gather_rows(x.t, rows, out.t.slice_rows(0, 1));
    gpu_->synchronize();
    EXPECT_GE(waits, 1);  // (and one more for the first upload: the pinned buffer's first growth)
    const int settled = waits;
    const int64_t before = workspace();
    rows.resize(400);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(399 - i);
    gpu_->gather_rows(x.t, rows, out.t);  // the row list outgrows its buffer: 1,600 bytes
    const int64_t grown = workspace();
    EXPECT_GE(grown - before, 1600) << "the new buffer is counted";
    std::vector<float> back(400 * 8);
    gpu_->to_host(out.t, back.data());
    EXPECT_EQ(waits, settled + 1);
    EXPECT_LT(workspace(), grown) << "the old buffer went after the wait";
    for (size_t i = 0; i < 400; ++i) {
        ASSERT_EQ(back[i * 8], v[(399 - i) * 8]) << i;
    }
    gpu_->set_stream_wait({});
    gpu_->synchronize();
    EXPECT_EQ(waits, settled + 1);
}

TEST_F(CudaOps, SwigluAddBiasAddAndGatherRows) {
    const auto g = random_floats(7 * 300, 1, 4.0f), u = random_floats(7 * 300, 2), bias = random_floats(300, 3);
    std::vector<float> want(g.size());
    cpu_->swiglu(Tensor{const_cast<float*>(g.data()), DType::f32, 7, 300}, Tensor{const_cast<float*>(u.data()), DType::f32, 7, 300},
                 Tensor{want.data(), DType::f32, 7, 300});
    DeviceTensor dg(*gpu_, g, 7, 300), du(*gpu_, u, 7, 300), out(*gpu_, 7, 300);
    gpu_->swiglu(dg.t, du.t, out.t);
    EXPECT_TRUE(within(out.host(), want, 1e-5));

    Vec bc = make_vec(bias), bg = make_vec(bias);
    gpu_->place(bg);
    cpu_->add_bias(Tensor{want.data(), DType::f32, 7, 300}, bc);
    gpu_->add_bias(out.t, bg);
    EXPECT_TRUE(within(out.host(), want, 1e-5));

    cpu_->add(Tensor{want.data(), DType::f32, 7, 300}, Tensor{const_cast<float*>(u.data()), DType::f32, 7, 300});
    gpu_->add(out.t, du.t);
    EXPECT_TRUE(within(out.host(), want, 1e-5));

    const std::vector<int64_t> rows = {6, 0, 3, 3};
    std::vector<float> gathered(4 * 300);
    cpu_->gather_rows(Tensor{want.data(), DType::f32, 7, 300}, rows, Tensor{gathered.data(), DType::f32, 4, 300});
    DeviceTensor dgat(*gpu_, 4, 300);
    gpu_->gather_rows(out.t, rows, dgat.t);
    EXPECT_TRUE(within(dgat.host(), gathered, 1e-5));
    std::vector<float> back(4 * 300);
    gpu_->to_host(dgat.t, back.data());
    EXPECT_EQ(back, dgat.host());
}

// Mixture-of-experts: o zeroed, then each expert's rows added into its tokens' rows, scaled
TEST_F(CudaOps, ExpertOutputsAddIntoTheirTokensRows) {
    const auto start = random_floats(9 * 200, 31), y1 = random_floats(4 * 200, 32), y2 = random_floats(2 * 200, 33);
    const std::vector<int64_t> rows1 = {8, 0, 5, 2}, rows2 = {5, 7};
    const std::vector<float> s1 = {0.25f, 1.0f, 0.6f, -0.125f}, s2 = {0.4f, 0.75f};
    std::vector<float> want = start;
    const Tensor w{want.data(), DType::f32, 9, 200};
    cpu_->zero(w);
    cpu_->add_rows_scaled(Tensor{const_cast<float*>(y1.data()), DType::f32, 4, 200}, rows1, s1, w);
    cpu_->add_rows_scaled(Tensor{const_cast<float*>(y2.data()), DType::f32, 2, 200}, rows2, s2, w);
    DeviceTensor o(*gpu_, start, 9, 200), d1(*gpu_, y1, 4, 200), d2(*gpu_, y2, 2, 200);
    gpu_->zero(o.t);
    gpu_->add_rows_scaled(d1.t, rows1, s1, o.t);
    gpu_->add_rows_scaled(d2.t, rows2, s2, o.t);
    EXPECT_TRUE(within(o.host(), want, 1e-6));
    EXPECT_TRUE(gpu_->computes_experts());
    const std::vector<int64_t> outside = {8, 9}, twice = {3, 3};
    EXPECT_THROW(gpu_->add_rows_scaled(d2.t, outside, s2, o.t), Error);
    EXPECT_THROW(gpu_->add_rows_scaled(d2.t, twice, s2, o.t), Error);
}

TEST_F(CudaOps, GreedyPicksMatchTheCpuIncludingTies) {
    for (int64_t cols : {1, 1000, 128256}) {
        auto l = random_floats(static_cast<size_t>(3 * cols), 9 + static_cast<uint64_t>(cols), 5.0f);
        if (cols > 10) {
            l[static_cast<size_t>(cols + 7)] = 100.0f;  // row 1: a tie between columns 7 and cols - 2
            l[static_cast<size_t>(2 * cols - 2)] = 100.0f;
        }
        std::vector<GreedyPick> want(3), got(3);
        cpu_->greedy_rows(Tensor{l.data(), DType::f32, 3, cols}, 500, want.data());
        DeviceTensor dl(*gpu_, l, 3, cols);
        gpu_->greedy_rows(dl.t, 500, got.data());
        for (size_t r = 0; r < 3; ++r) {
            EXPECT_EQ(got[r].token, want[r].token) << cols << " row " << r;
            EXPECT_EQ(got[r].max, want[r].max);
            EXPECT_NEAR(got[r].sum_exp, want[r].sum_exp, 1e-5 * want[r].sum_exp);
        }
    }
}

struct AttentionCase {
    int64_t heads, kv_heads, head_dim;
    DType kv;
    std::vector<int64_t> cached;  // per sequence: tokens already in the cache
    std::vector<int64_t> fresh;   // per sequence: tokens of this step
};
void PrintTo(const AttentionCase& c, std::ostream* os) {
    *os << c.heads << " heads over " << c.kv_heads << " of " << c.head_dim << ", " << dtype_name(c.kv) << ", "
        << c.cached.size() << " sequences";
}

// n copies of `value`, then `last` if given
std::vector<int64_t> repeated(size_t n, int64_t value, int64_t last = -1) {
    std::vector<int64_t> v(n, value);
    if (last >= 0) v.push_back(last);
    return v;
}

class CudaAttention : public CudaOps, public ::testing::WithParamInterface<AttentionCase> {};

// The cache is filled by kv_store on both backends (a first step with every cached token), then a
// step of fresh tokens is stored and attended; the step's output is compared.
TEST_P(CudaAttention, MatchesTheCpuBackend) {
    const AttentionCase c = GetParam();
    KvLayout L;
    L.kv_heads = c.kv_heads;
    L.head_dim = c.head_dim;
    L.block_tokens = 16;
    L.layers = 2;
    L.dtype = c.kv;
    const size_t S = c.cached.size();
    // block tables: blocks handed out interleaved between sequences, so tables are not contiguous
    std::vector<std::vector<int32_t>> tables(S);
    int32_t next_block = 0;
    bool more = true;
    for (int64_t round = 0; more; ++round) {
        more = false;
        for (size_t s = 0; s < S; ++s) {
            const int64_t need = (c.cached[s] + c.fresh[s] + 15) / 16;
            if (round < need) {
                tables[s].push_back(next_block++);
                more = true;
            }
        }
    }
    L.blocks = next_block + 3;
    const int64_t elem = c.kv == DType::f32 ? 4 : 2;
    const int64_t cache_bytes = L.layers * 2 * L.blocks * L.block_tokens * L.token_stride() * elem;
    auto kv_cpu = cpu_->allocate(cache_bytes, MemoryTag::kv_cache);
    auto kv_gpu = gpu_->allocate(cache_bytes, MemoryTag::kv_cache);

    auto layout = [&](const std::vector<int64_t>& first, const std::vector<int64_t>& count) {
        StepLayout st;
        for (size_t s = 0; s < S; ++s) {
            st.sequences.push_back({tables[s].data(), static_cast<int64_t>(tables[s].size())});
            for (int64_t i = 0; i < count[s]; ++i) {
                st.positions.push_back(static_cast<int32_t>(first[s] + i));
                st.sequence.push_back(static_cast<int32_t>(s));
            }
        }
        return st;
    };
    const int64_t layer = 1;
    const int64_t stride = L.token_stride();
    auto store = [&](const StepLayout& st, uint64_t seed) {
        const auto T = static_cast<int64_t>(st.positions.size());
        if (T == 0) return;
        const auto k = random_floats(static_cast<size_t>(T * stride), seed), v = random_floats(static_cast<size_t>(T * stride), seed + 1);
        cpu_->kv_store(*kv_cpu, L, layer, Tensor{const_cast<float*>(k.data()), DType::f32, T, stride},
                       Tensor{const_cast<float*>(v.data()), DType::f32, T, stride}, st);
        DeviceTensor dk(*gpu_, k, T, stride), dv(*gpu_, v, T, stride);
        gpu_->begin_step(st);
        gpu_->kv_store(*kv_gpu, L, layer, dk.t, dv.t, st);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    };
    store(layout(std::vector<int64_t>(S, 0), c.cached), 100);
    const StepLayout step = layout(c.cached, c.fresh);
    store(step, 200);

    const auto T = static_cast<int64_t>(step.positions.size());
    const auto q = random_floats(static_cast<size_t>(T * c.heads * c.head_dim), 300, 2.0f);
    std::vector<float> want(q.size());
    cpu_->attention(Tensor{const_cast<float*>(q.data()), DType::f32, T, c.heads * c.head_dim}, *kv_cpu, L, layer, step,
                    c.heads, Tensor{want.data(), DType::f32, T, c.heads * c.head_dim});
    DeviceTensor dq(*gpu_, q, T, c.heads * c.head_dim), out(*gpu_, T, c.heads * c.head_dim);
    gpu_->begin_step(step);
    gpu_->attention(dq.t, *kv_gpu, L, layer, step, c.heads, out.t);
    EXPECT_TRUE(within(out.host(), want, 1e-4));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaAttention,
    ::testing::Values(
        // decode, one sequence, short and long (long ones are split along the sequence)
        AttentionCase{8, 8, 64, DType::f32, {5}, {1}}, AttentionCase{32, 8, 64, DType::f32, {3000}, {1}},
        AttentionCase{9, 3, 64, DType::f16, {700}, {1}}, AttentionCase{64, 8, 128, DType::bf16, {1500}, {1}},
        // a batch of decodes of different lengths; then two on one KV head, split 4 ways for the
        // long one, so the short one's last 3 parts are empty
        AttentionCase{32, 8, 128, DType::f32, {0, 15, 16, 17, 900, 2}, {1, 1, 1, 1, 1, 1}},
        AttentionCase{4, 1, 64, DType::f32, {1000, 5}, {1, 1}},
        // prefill, with and without a cached prefix, mixed with decodes
        AttentionCase{16, 4, 64, DType::f32, {0}, {130}}, AttentionCase{40, 8, 128, DType::f16, {33, 0, 500}, {20, 64, 1}},
        // odd head sizes and groups: 1 KV head for 16 query heads, head size 80 and 256
        AttentionCase{16, 1, 80, DType::f32, {40}, {9}}, AttentionCase{4, 2, 256, DType::bf16, {300}, {3}},
        AttentionCase{6, 6, 16, DType::f32, {1}, {2}},
        // a head of 20 f16 entries is no whole number of 16-byte pieces: keys loaded one at a time
        AttentionCase{4, 2, 20, DType::f16, {50, 3}, {1, 1}},
        // prefill in query tiles, which the backend takes from one block per multiprocessor (the
        // emulator has 4): a head of 80 (spare output dims); a 130-token chunk after a prefix
        // beside a decode of 700 keys (a one-token tile); then two steps of many sequences, so
        // that a GPU's 132 to 170 multiprocessors take tiles too (the last with f32 entries,
        // heads of 128 and pairs of query heads: 32 tokens a tile)
        AttentionCase{16, 2, 80, DType::f16, {0}, {40}}, AttentionCase{8, 2, 64, DType::bf16, {100, 700}, {130, 1}},
        AttentionCase{32, 8, 64, DType::bf16, repeated(12, 8, 600), repeated(12, 17, 1)},
        AttentionCase{32, 16, 128, DType::f32, repeated(11, 0), repeated(11, 16)}));

#else
TEST(CudaOps, SkippedInABuildWithoutCuda) { GTEST_SKIP() << cuda_backend_unavailable(0); }
#endif

}  // namespace
}  // namespace tps
