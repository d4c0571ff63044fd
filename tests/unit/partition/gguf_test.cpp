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

// Writes GGUF v3 bytes by hand, for structures gguf-py will not write (corrupt counts, duplicate
// tensors, layers with a tensor missing).
class GgufBytes {
public:
    GgufBytes() { raw("GGUF"); u32(3); }
    GgufBytes& counts(uint64_t tensors, uint64_t kvs) { u64(tensors); u64(kvs); return *this; }
    GgufBytes& kv_u32(const std::string& key, uint32_t v) { str(key); u32(4); u32(v); return *this; }
    GgufBytes& kv_str(const std::string& key, const std::string& v) { str(key); u32(8); str(v); return *this; }
    GgufBytes& kv_array_u8(const std::string& key, uint64_t claimed) { str(key); u32(9); u32(0); u64(claimed); return *this; }
    GgufBytes& kv_str_claimed(const std::string& key, uint64_t claimed) { str(key); u32(8); u64(claimed); return *this; }
    GgufBytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint64_t offset) {
        str(name);
        u32(static_cast<uint32_t>(ne.size()));
        for (auto n : ne) u64(n);
        u32(0);  // f32
        u64(offset);
        return *this;
    }
    std::string path(const std::string& name, size_t data_bytes = 0) {
        std::string bytes = bytes_;
        bytes.resize((bytes.size() + 31) / 32 * 32 + data_bytes, '\0');
        const auto p = test::temp_path(name);
        std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        return p.string();
    }

private:
    void raw(const std::string& s) { bytes_ += s; }
    void u32(uint32_t v) { bytes_.append(reinterpret_cast<const char*>(&v), 4); }
    void u64(uint64_t v) { bytes_.append(reinterpret_cast<const char*>(&v), 8); }
    void str(const std::string& s) { u64(s.size()); raw(s); }
    std::string bytes_;
};

void expect_error_at(const std::string& path, const std::string& needle, bool model = false) {
    try {
        const GgufFile f = read_gguf_metadata(path);
        if (model) model_from_gguf(f);
        FAIL() << path << " accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    std::filesystem::remove(path);
}

TEST(Gguf, CorruptCountsAreRefusedBeforeAllocating) {
    // a u8 array claiming 2^40 elements, a string claiming 2^40 bytes: no gigabytes reserved
    expect_error_at(GgufBytes().counts(0, 1).kv_array_u8("a", uint64_t{1} << 40).path("arr.gguf"), "corrupt array");
    expect_error_at(GgufBytes().counts(0, 1).kv_str_claimed("s", uint64_t{1} << 40).path("str.gguf"),
                    "claims a string of 1099511627776 bytes");
    expect_error_at(GgufBytes().counts(0, 2).kv_u32("k", 1).kv_u32("k", 2).path("dupkey.gguf"), "appears twice");
}

// Header and metadata of a llama GGUF with hidden 8, FFN 16, 2 heads, `blocks` layers.
GgufBytes llama_header(uint64_t tensors, uint32_t blocks) {
    GgufBytes g;
    g.counts(tensors, 6);
    g.kv_str("general.architecture", "llama").kv_u32("llama.block_count", blocks).kv_u32("llama.context_length", 64)
        .kv_u32("llama.embedding_length", 8).kv_u32("llama.feed_forward_length", 16).kv_u32("llama.attention.head_count", 2);
    g.tensor("token_embd.weight", {8, 10}, 0);
    return g;
}

void add_layer(GgufBytes& g, int l, bool with_v) {
    const std::string p = "blk." + std::to_string(l) + ".";
    g.tensor(p + "attn_q.weight", {8, 8}, 0).tensor(p + "attn_k.weight", {8, 8}, 0);
    if (with_v) g.tensor(p + "attn_v.weight", {8, 8}, 0);
    g.tensor(p + "attn_output.weight", {8, 8}, 0).tensor(p + "ffn_gate.weight", {8, 16}, 0)
        .tensor(p + "ffn_up.weight", {8, 16}, 0).tensor(p + "ffn_down.weight", {16, 8}, 0);
}

TEST(Gguf, StructuralProblemsNameTheTensor) {
    GgufBytes good = llama_header(8, 1);
    add_layer(good, 0, true);
    const std::string good_path = good.path("good.gguf", 1024);
    EXPECT_EQ(model_from_gguf(read_gguf_metadata(good_path)).layers, 1);  // the builder itself is sound
    std::filesystem::remove(good_path);

    GgufBytes missing_v = llama_header(7, 1);
    add_layer(missing_v, 0, false);
    expect_error_at(missing_v.path("missing-v.gguf", 1024), "layer 0 has no attn_v.weight", true);

    GgufBytes duplicate = llama_header(9, 1);
    add_layer(duplicate, 0, true);
    duplicate.tensor("blk.0.attn_q.weight", {8, 8}, 0);
    expect_error_at(duplicate.path("dup.gguf", 1024), "blk.0.attn_q.weight appears twice", true);

    GgufBytes huge_blocks = llama_header(1, 1u << 30);
    expect_error_at(huge_blocks.path("blocks.gguf", 1024), "number of layers 1073741824 is beyond any real model", true);
    GgufBytes more_blocks = llama_header(1, 100);
    expect_error_at(more_blocks.path("blocks100.gguf", 1024), "block_count 100 does not fit its 1 tensors", true);

    GgufBytes long_index = llama_header(9, 1);
    add_layer(long_index, 0, true);
    long_index.tensor("blk.0000000000000.ffn_norm.weight", {8}, 0);
    expect_error_at(long_index.path("index.gguf", 1024), "names layer 0000000000000", true);
}

TEST(Gguf, MissingFileIsAnInputError) {
    EXPECT_THROW(read_gguf_metadata("/nonexistent/model.gguf"), InputError);
}

}  // namespace
}  // namespace tps
