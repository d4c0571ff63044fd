// Weight sources: safetensors (single and sharded) and GGUF, slices by rows (in place) and by
// columns (gathered), every corruption a clear error naming the tensor.
#include "safetensors_writer.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model_source.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace tps {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / (std::to_string(::getpid()) + "-" + name);
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

TEST(Safetensors, RowsInPlaceColumnsGatheredVectorsConverted) {
    const fs::path dir = temp_dir("st-slices");
    const auto w = test::random_values(6 * 8, 1);
    const auto n = test::random_values(8, 2);
    test::SafetensorsWriter st;
    st.add("m", {6, 8}, w);
    st.add("h", {6, 8}, w, "F16");
    st.add("norm", {8}, n, "BF16");
    st.write(dir / "model.safetensors");

    const auto src = WeightSource::open(dir);
    EXPECT_TRUE(src->has("m"));
    EXPECT_FALSE(src->has("nope"));
    EXPECT_EQ(src->shape("m"), (std::vector<int64_t>{6, 8}));
    const Weight rows = src->matrix("m", {2, 5}, {});
    EXPECT_TRUE(rows.owned.data() == nullptr);  // a row range is used in place
    ASSERT_EQ(rows.rows, 3);
    for (int64_t r = 0; r < 3; ++r) {
        float v[8];
        row_to_f32(rows.type, rows.row(r), 0, 8, v);
        for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(v[c], w[static_cast<size_t>((r + 2) * 8 + c)]);
    }
    const Weight cols = src->matrix("h", {}, {3, 7});
    EXPECT_TRUE(cols.owned.data() != nullptr);
    ASSERT_EQ(cols.cols, 4);
    for (int64_t r = 0; r < 6; ++r) {
        float v[4];
        row_to_f32(cols.type, cols.row(r), 0, 4, v);
        for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(v[c], f16_to_f32(f32_to_f16(w[static_cast<size_t>(r * 8 + 3 + c)])));
    }
    const Vec norm = src->vector("norm", {2, 6});
    ASSERT_EQ(norm.n, 4);
    EXPECT_EQ(norm.data()[0], bf16_to_f32(f32_to_bf16(n[2])));
    EXPECT_EQ(src->bytes_read(), 3 * 32 + 6 * 8 + 4 * 2);
    EXPECT_THROW(src->matrix("m", {4, 9}, {}), InputError);
    EXPECT_THROW(src->matrix("absent"), InputError);
    fs::remove_all(dir);
}

TEST(Safetensors, ShardedCheckpointsFollowTheIndex) {
    const fs::path dir = temp_dir("st-sharded");
    test::SafetensorsWriter a, b;
    a.add("x", {2, 2}, {1, 2, 3, 4});
    b.add("y", {2}, {5, 6});
    a.write(dir / "model-00001-of-00002.safetensors");
    b.write(dir / "model-00002-of-00002.safetensors");
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"}})";
    const auto src = WeightSource::open(dir);
    EXPECT_EQ(src->vector("y").data()[1], 6.0f);
    EXPECT_EQ(src->shape("x"), (std::vector<int64_t>{2, 2}));
    std::ofstream(dir / "model.safetensors.index.json")
        << R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}})";
    EXPECT_THROW(WeightSource::open(dir), InputError);  // the index names a tensor the shard lacks
    std::ofstream(dir / "model.safetensors.index.json") << R"({"weight_map": {"x": "../../etc/passwd"}})";
    EXPECT_THROW(WeightSource::open(dir), InputError);
    fs::remove_all(dir);
}

void expect_broken(const std::string& bytes, const std::string& needle) {
    const fs::path dir = temp_dir("st-broken");
    std::ofstream(dir / "model.safetensors", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    try {
        WeightSource::open(dir);
        FAIL() << "accepted: " << needle;
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}

std::string file_with_header(const std::string& header, size_t data_bytes) {
    const uint64_t n = header.size();
    std::string s(reinterpret_cast<const char*>(&n), 8);
    return s + header + std::string(data_bytes, '\0');
}

TEST(Safetensors, CorruptFilesNameTheProblem) {
    expect_broken("abc", "too short");
    expect_broken(file_with_header("{not json", 0), "not valid JSON");
    std::string huge(8, '\xff');
    expect_broken(huge + "{}", "header length");
    expect_broken(file_with_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8), "truncated");
    expect_broken(file_with_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}})", 16),
                  "12 bytes stored for a f32 tensor");
    expect_broken(file_with_header(R"({"t": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}})", 16),
                  "dtype \"Q9\" is not supported");
    expect_broken(file_with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})", 16),
                  "overlap");
    expect_broken(file_with_header(R"({"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", 16),
                  "not a list of sizes");
}

TEST(Gguf, TensorsServedUnderHfNamesWithSlices) {
    const auto src = WeightSource::open(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/gguf/tiny-llama-mixed.gguf");
    EXPECT_TRUE(src->has("model.embed_tokens.weight"));
    EXPECT_EQ(src->shape("model.embed_tokens.weight"), (std::vector<int64_t>{1000, 256}));  // torch order
    EXPECT_EQ(src->type("model.layers.1.mlp.down_proj.weight"), DType::q8_0);
    const Weight rows = src->matrix("model.embed_tokens.weight", {10, 20}, {});
    EXPECT_EQ(rows.row_bytes, 8 * 34);
    const Weight cols = src->matrix("model.embed_tokens.weight", {}, {64, 128});
    EXPECT_EQ(cols.row_bytes, 2 * 34);
    EXPECT_THROW(src->matrix("model.embed_tokens.weight", {}, {10, 128}), InputError);  // not on a block boundary
    EXPECT_EQ(src->type("model.layers.0.self_attn.q_proj.weight"), DType::q4_k);
    const Weight q = src->matrix("model.layers.0.self_attn.q_proj.weight", {}, {0, 256});
    EXPECT_EQ(q.row_bytes, 144);  // one super-block
    EXPECT_THROW(src->matrix("model.layers.0.self_attn.q_proj.weight", {}, {0, 128}), InputError);  // half of one
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

TEST(Safetensors, VectorsOfTypesTheEngineCannotReadNameTheTensor) {
    const fs::path dir = temp_dir("st-int-vector");
    const std::string header = R"({"model.norm.weight": {"dtype": "I32", "shape": [4], "data_offsets": [0, 16]}})";
    std::ofstream(dir / "model.safetensors", std::ios::binary) << file_with_header(header, 16);
    const auto src = WeightSource::open(dir);
    try {
        src->vector("model.norm.weight");
        FAIL();
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("model.norm.weight"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

// Random weights: a slice is the same numbers as the whole tensor's part, whatever is asked, so
// ranks loading different shards split one model.
TEST(RandomWeights, SlicesAgreeWithTheWholeTensor) {
    const ModelDesc m = load_model("llama-3.1-8b");
    const auto src = WeightSource::random(m, DType::f32, 7);
    const std::string q = "model.layers.3.self_attn.q_proj.weight";
    ASSERT_TRUE(src->has(q));
    EXPECT_EQ(src->shape(q), (std::vector<int64_t>{4096, 4096}));
    const Weight rows = src->matrix(q, {100, 104}, {});
    const Weight cols = src->matrix(q, {100, 104}, {2048, 4096});
    for (int64_t r = 0; r < 4; ++r) {
        const auto* a = reinterpret_cast<const float*>(rows.row(r));
        const auto* b = reinterpret_cast<const float*>(cols.row(r));
        for (int64_t c = 0; c < 2048; ++c) ASSERT_EQ(a[2048 + c], b[c]);
    }
    // values: mean near 0, standard deviation near 0.02; another tensor or seed differs
    double sum = 0, sq = 0;
    const auto* a = reinterpret_cast<const float*>(rows.row(0));
    for (int64_t c = 0; c < 4096; ++c) {
        sum += a[c];
        sq += static_cast<double>(a[c]) * a[c];
    }
    EXPECT_NEAR(sum / 4096, 0.0, 0.002);
    EXPECT_NEAR(std::sqrt(sq / 4096), 0.02, 0.002);
    const Weight other = WeightSource::random(m, DType::f32, 8)->matrix(q, {100, 101}, {});
    EXPECT_NE(std::memcmp(other.row(0), rows.row(0), 64), 0);
    // norms are gains of 1; unknown tensors are named
    const Vec norm = src->vector("model.layers.0.input_layernorm.weight", {10, 20});
    EXPECT_EQ(norm.n, 10);
    EXPECT_EQ(norm.data()[3], 1.0f);
    EXPECT_THROW(src->matrix("model.layers.99.mlp.up_proj.weight", {}, {}), InputError);
    // formats: f16 rows are the rounded f32 numbers
    const Weight h = WeightSource::random(m, DType::f16, 7)->matrix(q, {100, 101}, {});
    std::vector<float> back(4096);
    row_to_f32(DType::f16, h.row(0), 0, 4096, back.data());
    for (int64_t c = 0; c < 4096; ++c) ASSERT_NEAR(back[static_cast<size_t>(c)], a[c], 1e-4f);
    // int8: the layers' projections only, and a column slice keeps the whole row's scale
    const auto i8 = WeightSource::random(m, DType::int8, 7);
    EXPECT_EQ(i8->type(q), DType::int8);
    EXPECT_EQ(i8->type("model.embed_tokens.weight"), DType::bf16);
    EXPECT_EQ(i8->type("model.layers.0.input_layernorm.weight"), DType::f32);
    const std::string o = "model.layers.3.self_attn.o_proj.weight";
    const Weight whole = i8->matrix(o, {5, 9}, {});
    const Weight half = i8->matrix(o, {5, 9}, {2048, 4096});
    for (int64_t r = 0; r < 4; ++r) {
        ASSERT_EQ(whole.scale(r), half.scale(r));
        ASSERT_EQ(std::memcmp(whole.row(r) + 2048, half.row(r), 2048), 0);
    }
}

}  // namespace
}  // namespace tps
