// config.json -> ModelDesc: weights exact to the byte for the presets (expected numbers worked out
// by hand from the published shapes, in the comments), and clear errors for bad configs.
#include "tpserve/partition/hf_config.h"

#include "test_requests.h"
#include "tpserve/common/error.h"
#include "tpserve/partition/model_source.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace tps {
namespace {

TEST(Presets, AllSevenShipAndParse) {
    std::vector<std::string> names;
    for (const auto& p : presets()) names.emplace_back(p.name);
    EXPECT_EQ(names, (std::vector<std::string>{"llama-2-70b", "llama-3.1-70b", "llama-3.1-8b", "mixtral-8x7b",
                                               "qwen2.5-32b", "qwen2.5-72b", "smollm2-135m"}));
    for (const auto& n : names) EXPECT_NO_THROW(load_model(n)) << n;
}

TEST(Presets, Llama31_8bWeightsExact) {
    // per layer: q 4096x4096, k,v 1024x4096, o 4096x4096, gate/up/down 3 x 14336x4096, 2 norms of
    // 4096 = 218,112,000 params; x32 + embedding and LM head 128256x4096 each + final norm 4096
    // = 8,030,261,248 params, 2 bytes each.
    const ModelDesc m = load_model("llama-3.1-8b");
    EXPECT_EQ(total_parameters(m), 8030261248);
    EXPECT_EQ(total_weight_bytes(m), 16060522496);
    EXPECT_EQ(m.head_dim, 128);
    EXPECT_FALSE(m.tied_embeddings);
}

TEST(Presets, Llama31_70bInt8WeightsExact) {
    // layers int8 + one f16 scale per output row; norms, embedding, LM head stay bf16.
    // per layer: 855,638,016 int8 weights + 83,968 rows x 2 bytes of scales + 2 x 8192 x 2 bytes of
    // norms = 855,838,720 bytes; x80 = 68,467,097,600; + 2 x 128256x8192x2 + 8192x2
    // = 72,669,806,592 bytes.
    ModelDesc m = load_model("llama-3.1-70b");
    EXPECT_EQ(total_parameters(m), 70553706496);
    apply_weight_format(m, DType::int8);
    EXPECT_EQ(total_weight_bytes(m), 72669806592);
}

TEST(Presets, SmolLM2TiedWeightsExact) {
    // per layer 3,540,096 params x30 + one 49152x576 embedding (tied: no LM head) + norm 576
    const ModelDesc m = load_model("smollm2-135m");
    EXPECT_TRUE(m.tied_embeddings);
    EXPECT_EQ(total_parameters(m), 134515008);
    EXPECT_EQ(total_weight_bytes(m), 269030016);
}

TEST(Presets, Qwen25_32bCountsQkvBiases) {
    // per layer: q,o 5120x5120, k,v 1024x5120, biases 5120+1024+1024, mlp 3 x 27648x5120, norms
    // 2x5120 = 487,605,248; x64 + 2 x 152064x5120 + 5120 = 32,763,876,352 params
    const ModelDesc m = load_model("qwen2.5-32b");
    EXPECT_EQ(total_parameters(m), 32763876352);
    EXPECT_EQ(total_weight_bytes(m), 2 * int64_t{32763876352});
}

TEST(Presets, MixtralCountsEveryExpert) {
    // per layer: attention 41,943,040 + router 8x4096 + 8 experts x 3 x 14336x4096 + norms 8192
    // = 1,451,270,144; x32 + 2 x 32000x4096 + 4096 = 46,702,792,704 params
    const ModelDesc m = load_model("mixtral-8x7b");
    EXPECT_EQ(m.experts, 8);
    EXPECT_EQ(m.experts_active, 2);
    EXPECT_EQ(total_parameters(m), 46702792704);
}

nlohmann::json minimal() {
    return nlohmann::json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        "max_position_embeddings": 256, "torch_dtype": "float16"})");
}

void expect_error(const nlohmann::json& j, const std::string& needle) {
    try {
        model_from_hf_config(j, "bad", "bad/config.json");
        FAIL() << "accepted " << j.dump();
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("bad/config.json"), std::string::npos) << e.what();
    }
}

TEST(HfConfig, DefaultsAndVariants) {
    auto j = minimal();
    const ModelDesc m = model_from_hf_config(j, "tiny", "tiny/config.json");
    EXPECT_EQ(m.head_dim, 16);
    EXPECT_EQ(m.checkpoint_dtype, DType::f16);
    j.erase("num_key_value_heads");
    j.erase("torch_dtype");
    const ModelDesc mha = model_from_hf_config(j, "tiny", "tiny/config.json");
    EXPECT_EQ(mha.kv_heads, 4);  // transformers' default: as many KV heads as heads
    EXPECT_EQ(mha.checkpoint_dtype, DType::bf16);
    EXPECT_FALSE(mha.notes.empty());  // the assumed dtype is said
    j["attention_bias"] = true;
    j["mlp_bias"] = true;
    const ModelDesc biased = model_from_hf_config(j, "tiny", "tiny/config.json");
    EXPECT_EQ(total_parameters(biased) - total_parameters(mha), 2 * (64 + 64 + 64 + 64 + 128 + 128 + 64));
}

TEST(HfConfig, PreQuantizedCheckpoints) {
    auto j = minimal();
    j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}};
    expect_error(j, "quantization does not fit");  // 64 inputs are half a group of 128
    j["hidden_size"] = 128;
    j["intermediate_size"] = 256;
    j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 128}, {"zero_point", true}};
    const ModelDesc m = model_from_hf_config(j, "awq", "awq/config.json");
    EXPECT_EQ(weight_format_summary(m), "int4");
    j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 8}, {"group_size", 128}};
    expect_error(j, "gptq with 8 bits");
    j["quantization_config"] = {{"quant_method", "bitsandbytes"}};
    expect_error(j, "\"bitsandbytes\" is not supported");
}

TEST(HfConfig, MissingAndMistypedFields) {
    for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                            "max_position_embeddings", "model_type"}) {
        auto j = minimal();
        j.erase(key);
        expect_error(j, key);
    }
    auto j = minimal();
    j["hidden_size"] = "64";
    expect_error(j, "\"hidden_size\" must be an integer");
    j = minimal();
    j["num_hidden_layers"] = 0;
    expect_error(j, "must be positive");
    j = minimal();
    j["num_key_value_heads"] = 3;
    expect_error(j, "not a multiple of num_key_value_heads 3");
    j = minimal();
    j["hidden_size"] = 66;
    expect_error(j, "does not divide by num_attention_heads");
    j = minimal();
    j["model_type"] = "gpt2";
    expect_error(j, "model_type \"gpt2\" is not a supported");
    j = minimal();
    j["torch_dtype"] = "int8";
    expect_error(j, "torch_dtype");
    j = minimal();
    j["model_type"] = "mixtral";
    expect_error(j, "num_local_experts");
    j["num_local_experts"] = 4;
    j["num_experts_per_tok"] = 5;
    expect_error(j, "exceeds");
}

TEST(HfConfig, SizesBeyondAnyModelAreRefusedNotOverflowed) {
    auto j = minimal();
    j["intermediate_size"] = int64_t{1} << 48;
    expect_error(j, "FFN size 281474976710656 is beyond any real model");
    j = minimal();
    j["num_hidden_layers"] = 1 << 20;
    expect_error(j, "number of layers");
    j = minimal();
    j["max_position_embeddings"] = 8;
    expect_error(j, "below one KV block");
}

TEST(HfConfig, SlidingWindowsAndRopeLayouts) {
    auto j = minimal();
    j["model_type"] = "mistral";
    j["sliding_window"] = 4096;
    EXPECT_EQ(model_from_hf_config(j, "m", "m/config.json").sliding_window, 4096);
    j["sliding_window"] = nullptr;
    EXPECT_EQ(model_from_hf_config(j, "m", "m/config.json").sliding_window, 0);
    auto q = minimal();
    q["model_type"] = "qwen2";
    q["sliding_window"] = 128;  // ignored unless use_sliding_window
    EXPECT_EQ(model_from_hf_config(q, "q", "q/config.json").sliding_window, 0);
    q["use_sliding_window"] = true;
    EXPECT_EQ(model_from_hf_config(q, "q", "q/config.json").sliding_window, 128);
    // transformers >= 5 writes rope_theta and the scaling inside rope_parameters
    auto r = minimal();
    r["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "llama3"}, {"factor", 8.0},
                            {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
    const ModelDesc m = model_from_hf_config(r, "r", "r/config.json");
    EXPECT_EQ(m.rope.theta, 500000.0);
    EXPECT_EQ(m.rope.scaling, "llama3");
    EXPECT_EQ(m.rope.original_max_position, 64);
}

TEST(HfConfig, PreQuantizedCheckpointsKeepTheirFormat) {
    auto j = minimal();
    j["hidden_size"] = 128;
    j["intermediate_size"] = 256;
    j["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}};
    ModelDesc m = model_from_hf_config(j, "gptq", "gptq/config.json");
    EXPECT_THROW(apply_weight_format(m, DType::int8), UsageError);
}

TEST(ModelSource, DirectoriesFilesAndUnknownNames) {
    namespace fs = std::filesystem;
    const fs::path dir = test::temp_path("tps-hf-dir");
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << minimal().dump();
    EXPECT_EQ(load_model(dir.string()).name, dir.filename().string());
    EXPECT_EQ(load_model((dir / "config.json").string()).layers, 2);
    std::ofstream(dir / "config.json") << "{ not json";
    EXPECT_THROW(load_model(dir.string()), InputError);
    fs::remove(dir / "config.json");
    EXPECT_THROW(load_model(dir.string()), InputError);  // a directory without config.json
    std::ofstream(dir / "weights.gguf") << "not a gguf";
    EXPECT_THROW(load_model((dir / "weights.gguf").string()), InputError);
    fs::remove_all(dir);
    try {
        load_model("llama-9000");
        FAIL();
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find("llama-3.1-70b"), std::string::npos) << e.what();
    }
    EXPECT_EQ(load_model(test::fixture("gguf/tiny-llama-mixed.gguf")).layers, 3);
}

}  // namespace
}  // namespace tps
