// Weight-only int8 (`--format int8`): the quantizer's rules, quantizing at load through
// ModelFiles::store_layers_as, tensor-parallel slices that keep the whole row's scale, and the
// whole forward pass against transformers running the same int8 weights dequantized
// (tests/fixtures/make_int8_reference.py): logits within 1e-4 of each row's largest reference
// logit, greedy continuations identical.
#include "tpserve/common/error.h"
#include "tpserve/engine/llama.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/partition/memory_model.h"
#include "safetensors_writer.h"
#include "support/hf_reference.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <unistd.h>

namespace tps {
namespace {

std::string fixture(const std::string& name) { return std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/" + name; }

TEST(Int8, ScaleIsTheSmallestHalfThatKeepsEveryValueWithin127) {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> mag(-12.0f, 3.0f);
    for (int i = 0; i < 2000; ++i) {
        const float amax = std::pow(10.0f, mag(rng));
        const uint16_t bits = int8_scale_bits(amax);
        EXPECT_GE(f16_to_f32(bits) * 127.0f, amax) << amax;
        if (bits > 1) {
            EXPECT_LT(f16_to_f32(static_cast<uint16_t>(bits - 1)) * 127.0f, amax) << amax;  // and no larger
        }
    }
    EXPECT_EQ(int8_scale_bits(0.0f), 0);
    EXPECT_THROW(int8_scale_bits(std::numeric_limits<float>::infinity()), InputError);
    EXPECT_THROW(int8_scale_bits(std::numeric_limits<float>::quiet_NaN()), InputError);
    EXPECT_THROW(int8_scale_bits(1e8f), InputError);  // a scale past f16's largest
}

TEST(Int8, RowsRoundTripWithinHalfAStepAndTheScalesTrailTheRows) {
    const int64_t rows = 5, cols = 37;
    Weight w = make_weight(DType::int8, rows, cols, MemoryTag::workspace);
    EXPECT_EQ(w.row_bytes, cols);
    EXPECT_EQ(w.bytes(), *matrix_bytes(DType::int8, rows, cols));  // the planner's size, exactly
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.0f, 0.1f);
    std::vector<float> x(static_cast<size_t>(rows * cols));
    for (auto& v : x) v = d(rng);
    for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(4 * cols + c)] = 0.0f;  // an all-zero row
    for (int64_t r = 0; r < rows; ++r) store_row(w, r, x.data() + r * cols);
    std::vector<float> back(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float s = w.scale(r);
        uint16_t stored;
        std::memcpy(&stored, w.data + rows * cols + 2 * r, 2);
        EXPECT_EQ(f16_to_f32(stored), s) << "row " << r << "'s scale sits after the last row";
        weight_row_to_f32(w, r, 0, cols, back.data());
        int peak = 0;
        for (int64_t c = 0; c < cols; ++c) {
            const int q = static_cast<int8_t>(w.row(r)[c]);
            peak = std::max(peak, std::abs(q));
            EXPECT_NEAR(back[static_cast<size_t>(c)], x[static_cast<size_t>(r * cols + c)], s / 2 + 1e-9f);
            EXPECT_EQ(back[static_cast<size_t>(c)], static_cast<float>(q) * s);
        }
        if (r == 4) {
            EXPECT_EQ(s, 0.0f);
            EXPECT_EQ(peak, 0);
        } else {
            EXPECT_GE(peak, 126) << "the largest magnitude uses the range";
            EXPECT_LE(peak, 127);
        }
    }
}

TEST(Int8, BadInputIsRefusedByName) {
    Weight w = make_weight(DType::int8, 1, 4, MemoryTag::workspace);
    const float bad[4] = {0.1f, std::numeric_limits<float>::quiet_NaN(), 0.2f, 0.3f};
    EXPECT_THROW(store_row(w, 0, bad), InputError);
    const float inf[4] = {0.1f, 0.2f, -std::numeric_limits<float>::infinity(), 0.3f};
    EXPECT_THROW(store_row(w, 0, inf), InputError);
    std::byte row[8];
    const float x[4] = {};
    EXPECT_THROW(f32_to_row(DType::int8, x, 4, row), InputError);  // the scale has nowhere to go
    EXPECT_THROW(make_weight(DType::q4_0, 2, 33, MemoryTag::workspace), UsageError);
    EXPECT_THROW(make_weight(DType::q4_k, 2, 128, MemoryTag::workspace), UsageError);  // half a super-block
    EXPECT_THROW(make_weight(DType::iq2_xxs, 2, 256, MemoryTag::workspace), UsageError);
}

// A one-tensor checkpoint whose tensor "w" the description marks as a linear weight in `to`.
std::shared_ptr<const WeightSource> converted_one(const std::filesystem::path& dir, const std::vector<float>& values,
                                                  int64_t rows, int64_t cols, DType to) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    test::SafetensorsWriter st;
    st.add("w", {rows, cols}, values);
    st.write(dir / "model.safetensors");
    ModelDesc m;
    TensorSpec t;
    t.name = "w";
    t.out = rows;
    t.in = cols;
    t.linear = true;
    t.dtype = to;
    m.layer_tensors = {{t}};
    return WeightSource::converted(WeightSource::open(dir), m);
}

TEST(Int8, WeightsItCannotStoreAreRefusedNamingTheTensorAndRow) {
    const auto dir = std::filesystem::temp_directory_path() / ("int8-bad-" + std::to_string(::getpid()));
    auto values = test::random_values(4 * 64, 9);
    values[2 * 64 + 5] = std::numeric_limits<float>::infinity();
    const auto src = converted_one(dir, values, 4, 64, DType::int8);
    EXPECT_EQ(src->type("w"), DType::int8);
    try {
        (void)src->matrix("w");
        ADD_FAILURE() << "an infinite weight was quantized";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("w: row 2"), std::string::npos) << e.what();
    }
    // a column slice still reads (and checks) the whole row
    EXPECT_THROW((void)src->matrix("w", {2, 3}, {0, 32}), InputError);
    EXPECT_NO_THROW((void)src->matrix("w", {0, 2}, {0, 32}));
    values[2 * 64 + 5] = 1e10f;  // a scale past f16's largest
    EXPECT_THROW((void)converted_one(dir, values, 4, 64, DType::int8)->matrix("w"), InputError);
    std::filesystem::remove_all(dir);
}

TEST(Int8, BlockFormatsConvertSliceBySliceAsWhole) {
    // q8_0 quantizes 32 columns at a time: a rank's column slice is the whole matrix's columns
    const auto dir = std::filesystem::temp_directory_path() / ("q8-slices-" + std::to_string(::getpid()));
    const auto values = test::random_values(6 * 128, 4);
    const auto src = converted_one(dir, values, 6, 128, DType::q8_0);
    const Weight whole = src->matrix("w");
    const Weight part = src->matrix("w", {1, 5}, {64, 128});
    ASSERT_EQ(part.type, DType::q8_0);
    for (int64_t r = 0; r < 4; ++r) {
        ASSERT_EQ(std::memcmp(whole.row(r + 1) + 2 * 34, part.row(r), static_cast<size_t>(part.row_bytes)), 0) << r;
    }
    EXPECT_THROW((void)src->matrix("w", {}, {16, 48}), InputError);  // not on q8_0's 32-column blocks
    std::filesystem::remove_all(dir);
}

TEST(Int8, StoreLayersAsQuantizesTheLinearWeightsOnly) {
    ModelFiles files = ModelFiles::open(fixture("llama3"));
    files.store_layers_as(DType::int8);
    EXPECT_EQ(weight_format_summary(files.desc), "int8");
    const LlamaWeights w = load_llama_weights(files.weights, files.desc, {});
    EXPECT_EQ(w.embedding.type, DType::f32);
    EXPECT_EQ(w.lm_head.type, DType::f32);
    int64_t held = w.embedding.bytes() + w.lm_head.bytes();
    for (const auto& l : w.layers) {
        for (const Weight* m : l.matrices()) {
            EXPECT_EQ(m->type, DType::int8);
            held += m->bytes();
        }
        held += (l.attn_norm.n + l.ffn_norm.n) * 4;
    }
    held += w.final_norm.n * 4;
    // what the planner predicts for the one shard, byte for byte
    const int64_t predicted = global_weight_bytes(files.desc, true, true, 1, 0) +
                              [&] {
                                  int64_t n = 0;
                                  for (int64_t l = 0; l < files.desc.layers; ++l) n += layer_weight_bytes(files.desc, l, 1, 0);
                                  return n;
                              }();
    EXPECT_EQ(held, predicted);
}

TEST(Int8, FormatsTheEngineCannotComputeWithAreRefused) {
    ModelFiles files = ModelFiles::open(fixture("llama3"));
    EXPECT_THROW(files.store_layers_as(DType::fp8), UsageError);
    EXPECT_THROW(files.store_layers_as(DType::iq2_xxs), UsageError);
    try {  // the engine computes with q4_k, but these 64-wide rows are a quarter of its blocks
        files.store_layers_as(DType::q4_k);
        FAIL() << "q4_k stored";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("256-element blocks"), std::string::npos) << e.what();
    }
    ModelFiles gguf = ModelFiles::open(fixture("llama3-gguf-q8_0/llama3-tiny-Q8_0.gguf"));
    EXPECT_THROW(gguf.store_layers_as(DType::int8), UsageError);  // a GGUF's formats are the file's
}

TEST(Int8, TensorParallelSlicesKeepTheWholeRowsScale) {
    // O and down are split by input columns: each rank's slice carries the scale of the whole
    // row, so the ranks' partial sums add up to the unsplit int8 model's
    ModelFiles files = ModelFiles::open(fixture("llama-bias"));
    files.store_layers_as(DType::int8);
    const LlamaWeights whole = load_llama_weights(files.weights, files.desc, {});
    for (int tp = 2; tp <= 4; tp += 2) {
        for (int rank = 0; rank < tp; ++rank) {
            ShardSpec s;
            s.tp = tp;
            s.tp_rank = rank;
            const LlamaWeights part = load_llama_weights(files.weights, files.desc, s);
            for (size_t l = 0; l < whole.layers.size(); ++l) {
                for (const auto pick : {&LayerWeights::wo, &LayerWeights::w_down}) {
                    const Weight& a = whole.layers[l].*pick;
                    const Weight& b = part.layers[l].*pick;
                    ASSERT_EQ(a.rows, b.rows);
                    ASSERT_EQ(a.cols, b.cols * tp);
                    for (int64_t r = 0; r < a.rows; ++r) {
                        ASSERT_EQ(a.scale(r), b.scale(r)) << "layer " << l << " row " << r << " tp" << tp;
                        ASSERT_EQ(std::memcmp(a.row(r) + rank * b.cols, b.row(r), static_cast<size_t>(b.cols)), 0);
                    }
                }
                // Q is split by rows: rank's rows are the whole model's, scales included
                const Weight& qa = whole.layers[l].wq;
                const Weight& qb = part.layers[l].wq;
                for (int64_t r = 0; r < qb.rows; ++r) {
                    ASSERT_EQ(qa.scale(rank * qb.rows + r), qb.scale(r));
                    ASSERT_EQ(std::memcmp(qa.row(rank * qb.rows + r), qb.row(r), static_cast<size_t>(qb.cols)), 0);
                }
            }
        }
    }
}

class Int8Reference : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        std::ifstream in(fixture(GetParam()) + "/reference-int8.json");
        ASSERT_TRUE(in.good()) << GetParam();
        ref_ = nlohmann::json::parse(in);
        files_ = std::make_unique<ModelFiles>(ModelFiles::open(fixture(GetParam())));
        files_->store_layers_as(DType::int8);
        backend_ = make_cpu_backend(2);
        ModelOptions opt;
        opt.max_step_tokens = 256;
        opt.kv_tokens = 1024;
        model_ = std::make_unique<LlamaModel>(files_->desc, load_llama_weights(files_->weights, files_->desc, {}),
                                              *backend_, opt);
    }

    nlohmann::json ref_;
    std::unique_ptr<ModelFiles> files_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<LlamaModel> model_;
};

TEST_P(Int8Reference, LogitsAndGreedyContinuationsMatchTransformers) {
    const int64_t vocab = ref_["vocab_size"].get<int64_t>();
    int64_t seq = 0;
    for (const auto& p : ref_["prompts"]) {
        const auto ids = p["input_ids"].get<std::vector<int32_t>>();
        const auto want = testing::decode_base64_floats(p["logits_b64"].get<std::string>());
        ASSERT_EQ(static_cast<int64_t>(want.size()), static_cast<int64_t>(ids.size()) * vocab);
        const StepResult all = model_->forward({{seq++, ids, 0, true}});
        for (size_t t = 0; t < ids.size(); ++t) {
            ASSERT_TRUE(testing::row_close(all.row(0, static_cast<int64_t>(t)), want.data() + static_cast<int64_t>(t) * vocab,
                                           vocab, 1e-4f))
                << GetParam() << " prompt " << p["name"].get<std::string>() << " position " << t;
        }
        // greedy, token by token through the KV cache
        const auto greedy = p["greedy"]["ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        const int64_t s = seq++;
        StepResult r = model_->forward({{s, ids, 0, false}});
        int64_t pos = static_cast<int64_t>(ids.size());
        while (got.size() < greedy.size()) {
            const auto next = static_cast<int32_t>(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
            got.push_back(next);
            r = model_->forward({{s, {next}, pos++, false}});
        }
        EXPECT_EQ(got, greedy) << GetParam() << " prompt " << p["name"].get<std::string>();
    }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Int8Reference, ::testing::Values("llama3", "llama-bias", "qwen2", "mixtral"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                             std::string n = p.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

}  // namespace
}  // namespace tps
