// The GGUF metadata reader against fixtures written by gguf-py (tests/fixtures/make_gguf_fixtures.py;
// expected sizes in tests/fixtures/gguf/EXPECTED.md, computed there from gguf-py's tables).
#include "tpserve/partition/gguf.h"

#include "test_requests.h"
#include "tpserve/common/error.h"
#include "tpserve/partition/memory_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tps {
namespace {

using test::fixture;

int64_t tensor_total(const GgufFile& f) {
    int64_t total = 0;
    for (const auto& t : f.tensors) total += t.bytes;
    return total;
}

TEST(Gguf, ReadsMixedLlamaMetadataAndSkipsArrays) {
    const GgufFile f = read_gguf_metadata(fixture("gguf/tiny-llama-mixed.gguf"));
    EXPECT_EQ(f.version, 3u);
    EXPECT_EQ(f.kv.size(), 42u);
    ASSERT_EQ(f.tensors.size(), 30u);
    EXPECT_EQ(f.alignment, 32u);
    EXPECT_EQ(f.data_offset, 20000u);
    EXPECT_EQ(tensor_total(f), 1973328);
    EXPECT_EQ(f.string("general.architecture"), "llama");
    EXPECT_EQ(f.integer("llama.block_count"), 3);
    EXPECT_EQ(f.find("tokenizer.ggml.tokens")->strs.size(), 1000u);
    EXPECT_NEAR(*f.real("llama.rope.freq_base"), 500000.0, 1e-3);
    // spot checks from EXPECTED.md
    EXPECT_EQ(f.tensors[0].name, "token_embd.weight");
    EXPECT_EQ(f.tensors[0].bytes, 272000);
    EXPECT_EQ(f.tensors[2].bytes, 210000);   // output.weight q6_k [256, 1000]
    EXPECT_EQ(f.tensors[20].bytes, 208896);  // blk.1.ffn_down.weight q8_0 [768, 256]
    EXPECT_EQ(f.tensors[29].offset, 1812064u);
}

TEST(Gguf, ModelFromMixedLlamaCountsEveryTensorAtItsOwnType) {
    const ModelDesc m = model_from_gguf(read_gguf_metadata(fixture("gguf/tiny-llama-mixed.gguf")));
    EXPECT_TRUE(m.from_gguf);
    EXPECT_EQ(m.layers, 3);
    EXPECT_EQ(m.hidden, 256);
    EXPECT_EQ(m.heads, 8);
    EXPECT_EQ(m.kv_heads, 2);
    EXPECT_EQ(m.head_dim, 32);
    EXPECT_EQ(m.vocab, 1000);
    EXPECT_FALSE(m.tied_embeddings);
    EXPECT_EQ(total_weight_bytes(m), 1973328);
    // layer 1 holds a q8_0 down projection, the others q6_k
    EXPECT_EQ(layer_weight_bytes(m, 1, 1, 0) - layer_weight_bytes(m, 0, 1, 0), 208896 - 161280);
    EXPECT_EQ(weight_format_summary(m), "q4_k + q6_k + q8_0");
    // --format cannot change a GGUF's types
    ModelDesc copy = m;
    EXPECT_THROW(apply_weight_format(copy, DType::int8), UsageError);
}

TEST(Gguf, TiedQwen2WithBiasesAndCustomAlignment) {
    const GgufFile f = read_gguf_metadata(fixture("gguf/tiny-qwen2-tied.gguf"));
    EXPECT_EQ(f.alignment, 64u);
    EXPECT_EQ(f.data_offset % 64, 0u);
    const ModelDesc m = model_from_gguf(f);
    EXPECT_EQ(m.architecture, "qwen2");
    EXPECT_TRUE(m.tied_embeddings);
    EXPECT_EQ(m.vocab, 500);  // from token_embd: the file has no qwen2.vocab_size
    EXPECT_EQ(total_weight_bytes(m), 119040);
    bool has_bias = false;
    for (const auto& t : m.layer_tensors[0]) has_bias |= t.name == "blk.0.attn_k.bias" && t.role == TensorRole::kv_column;
    EXPECT_TRUE(has_bias);
}

TEST(Gguf, MergedMixtralExperts) {
    const ModelDesc m = model_from_gguf(read_gguf_metadata(fixture("gguf/tiny-mixtral.gguf")));
    EXPECT_EQ(m.architecture, "mixtral");
    EXPECT_EQ(m.experts, 4);
    EXPECT_EQ(m.experts_active, 2);
    EXPECT_EQ(total_weight_bytes(m), 220928);
    int experts = 0;
    for (const auto& t : m.layer_tensors[0]) experts += t.experts == 4 ? 1 : 0;
    EXPECT_EQ(experts, 3);  // gate, up, down
}

void expect_input_error(const std::string& file, const std::string& needle) {
    try {
        read_gguf_metadata(fixture("gguf/" + file));
        FAIL() << file << " was accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
}

TEST(Gguf, CorruptFilesAreClearErrors) {
    expect_input_error("truncated.gguf", "blk.1.attn_k.weight");
    expect_input_error("badmagic.gguf", "not a GGUF file");
    expect_input_error("v1.gguf", "version 1 is not supported");
    expect_input_error("hugecount.gguf", "cannot fit");
}

TEST(Gguf, TensorDataCutShortIsDetected) {
    // a file whose metadata is whole but whose last tensor runs past the end of the file
    const auto src = fixture("gguf/tiny-llama-mixed.gguf");
    const auto dst = test::temp_path("tps-cut-data.gguf");
    std::filesystem::copy_file(src, dst, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(dst, std::filesystem::file_size(src) - 1000);
    try {
        read_gguf_metadata(dst);
        FAIL() << "accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("blk.2.ffn_down.weight"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
    }
    std::filesystem::remove(dst);
}

TEST(Gguf, EveryTruncationOfTheHeaderIsAnErrorNotACrash) {
    // Cut the file at every byte inside the metadata: each must fail with InputError.
    const auto src = fixture("gguf/tiny-qwen2-tied.gguf");
    std::ifstream in(src, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const GgufFile whole = read_gguf_metadata(src);
    const auto dst = test::temp_path("tps-cut-header.gguf");
    for (size_t cut = 0; cut < whole.data_offset; cut += 7) {
        std::ofstream(dst, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(cut));
        EXPECT_THROW(read_gguf_metadata(dst), InputError) << "cut at " << cut;
    }
    std::filesystem::remove(dst);
}

TEST(Gguf, MissingFileIsAnInputError) {
    EXPECT_THROW(read_gguf_metadata("/nonexistent/model.gguf"), InputError);
}

}  // namespace
}  // namespace tps
