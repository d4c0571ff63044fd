// Bad tokenizer files must fail with a tps::InputError that says what is wrong and where: an
// unsupported component, a missing model, mistyped fields, a merge naming an unknown token, bad
// GGUF tokenizer metadata. Each case edits a valid tokenizer.json (the llama2 fixture).
#include "tokenizer_test_data.h"

#include "tpserve/common/error.h"
#include "tpserve/partition/gguf.h"

#include <gtest/gtest.h>

#include <functional>

namespace tps {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const InputError& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("WRONG EXCEPTION TYPE: ") + e.what();
    }
    return "NO ERROR";
}

class BadTokenizerJson : public ::testing::Test {
protected:
    json base_ = test::read_json_file(test::fixture("models/llama2/tokenizer.json"));
    std::filesystem::path path_ = std::filesystem::temp_directory_path() /
                                  ("tps_bad_tokenizer_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                   "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".json");
    void TearDown() override { std::filesystem::remove(path_); }

    std::string load_error(const json& j) {
        std::ofstream(path_) << j.dump();
        return error_of([&] { Tokenizer::from_hf_json(path_); });
    }
    std::string load_error(const std::function<void(json&)>& edit) {
        json j = base_;
        edit(j);
        return load_error(j);
    }
};

TEST_F(BadTokenizerJson, TheUneditedFileLoads) { EXPECT_EQ(load_error([](json&) {}), "NO ERROR"); }

TEST_F(BadTokenizerJson, UnsupportedComponentsAreNamed) {
    EXPECT_NE(load_error([](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })
                  .find("pre_tokenizer type 'Whitespace' is not supported"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["normalizer"]["normalizers"][1] = {{"type", "Lowercase"}}; })
                  .find("normalizer type 'Lowercase' is not supported (at tokenizer.normalizer.normalizers[1]"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["decoder"]["decoders"][0] = {{"type", "WordPiece"}, {"prefix", "##"}}; })
                  .find("decoder type 'WordPiece' is not supported"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["post_processor"] = {{"type", "RobertaProcessing"}}; })
                  .find("post_processor type 'RobertaProcessing' is not supported"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["type"] = "Unigram"; }).find("model type 'Unigram' is not supported"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["dropout"] = 0.1; }).find("dropout is not supported"),
              std::string::npos);
}

TEST_F(BadTokenizerJson, MissingModel) {
    const std::string e = load_error([](json& j) { j.erase("model"); });
    EXPECT_NE(e.find("missing field \"model\""), std::string::npos) << e;
    EXPECT_NE(e.find(path_.string()), std::string::npos) << "the message names the file: " << e;
}

TEST_F(BadTokenizerJson, MistypedFields) {
    EXPECT_NE(load_error([](json& j) { j["model"]["vocab"]["<s>"] = "1"; }).find("vocab['<s>'] must be an integer id"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["fuse_unk"] = "yes"; })
                  .find("field \"fuse_unk\" must be true or false"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["merges"][3] = 5; }).find("merges[3] must be"), std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["merges"][3] = "nospace"; }).find("is not two tokens"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["vocab"] = json::array(); }).find("\"vocab\" must be an object"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["added_tokens"][0]["id"] = -4; }).find("id -4 is out of range"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["decoder"]["decoders"][3]["content"] = "ab"; })
                  .find("\"content\" must be one character"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) {
                  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", " "}}}, {"behavior", "Sideways"},
                                        {"invert", false}};
              }).find("behavior 'Sideways' is not one of"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) {
                  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                                        {"behavior", "Isolated"}, {"invert", false}};
              }).find("cannot compile the pattern '(unclosed'"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>"; })
                  .find("special token '<bos>' is not in special_tokens"),
              std::string::npos);
    EXPECT_NE(load_error([](json& j) { j["model"]["vocab"]["duplicate"] = 5; }).find("id 5 is given to both"),
              std::string::npos);
}

TEST_F(BadTokenizerJson, MergeNamingUnknownToken) {
    const std::string e = load_error([](json& j) { j["model"]["merges"][7] = "▁ zzzz_not_a_token"; });
    EXPECT_NE(e.find("merges entry 7 ('▁ zzzz_not_a_token') names 'zzzz_not_a_token', which is not in the vocabulary"),
              std::string::npos)
        << e;
}

TEST_F(BadTokenizerJson, NotJsonOrMissing) {
    std::ofstream(path_) << "{ not json";
    EXPECT_NE(error_of([&] { Tokenizer::from_hf_json(path_); }).find("not valid JSON"), std::string::npos);
    EXPECT_NE(error_of([&] { Tokenizer::from_hf_json(path_.string() + ".absent"); }).find("cannot open"),
              std::string::npos);
    EXPECT_NE(error_of([&] { Tokenizer::from_hf_dir(std::filesystem::temp_directory_path() / "tps_no_such_dir"); })
                  .find("no tokenizer.json"),
              std::string::npos);
}

TEST_F(BadTokenizerJson, ConfigNamingAnUnknownToken) {
    std::ofstream(path_) << base_.dump();
    const auto cfg = path_.string() + ".config.json";
    std::ofstream(cfg) << R"({"bos_token": "<nope>", "eos_token": "</s>"})";
    const std::string e = error_of([&] { Tokenizer::from_hf_json(path_, cfg); });
    std::filesystem::remove(cfg);
    EXPECT_NE(e.find("bos_token '<nope>' is not a token"), std::string::npos) << e;
}

// A minimal GGUF tokenizer in memory.
GgufFile gguf_tokenizer(const std::string& model, const std::string& pre) {
    GgufFile f;
    f.path = "test.gguf";
    const auto str = [](const std::string& s) {
        GgufValue v;
        v.type = GgufType::string;
        v.str = s;
        return v;
    };
    f.kv["tokenizer.ggml.model"] = str(model);
    f.kv["tokenizer.ggml.pre"] = str(pre);
    GgufValue tokens;
    tokens.type = GgufType::array;
    tokens.array_type = GgufType::string;
    tokens.strs = {"a", "b", "ab", "<s>"};
    tokens.array_size = 4;
    f.kv["tokenizer.ggml.tokens"] = tokens;
    GgufValue merges = tokens;
    merges.strs = {"a b"};
    merges.array_size = 1;
    f.kv["tokenizer.ggml.merges"] = merges;
    GgufValue types;
    types.type = GgufType::array;
    types.array_type = GgufType::i32;
    types.ints = {1, 1, 1, 3};
    types.array_size = 4;
    f.kv["tokenizer.ggml.token_type"] = types;
    return f;
}

TEST(BadGgufTokenizer, Errors) {
    EXPECT_EQ(error_of([] { Tokenizer::from_gguf(gguf_tokenizer("gpt2", "llama-bpe")); }), "NO ERROR");
    EXPECT_NE(error_of([] { Tokenizer::from_gguf(gguf_tokenizer("gpt2", "tekken-9")); })
                  .find("tokenizer.ggml.pre 'tekken-9' is not supported"),
              std::string::npos);
    EXPECT_NE(error_of([] { Tokenizer::from_gguf(gguf_tokenizer("bert", "default")); })
                  .find("tokenizer.ggml.model 'bert' is not supported"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  auto f = gguf_tokenizer("gpt2", "qwen2");
                  f.kv["tokenizer.ggml.merges"].strs = {"a c"};
                  Tokenizer::from_gguf(f);
              }).find("names 'c', which is not in the vocabulary"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  auto f = gguf_tokenizer("gpt2", "smollm");
                  f.kv["tokenizer.ggml.token_type"].ints = {1, 1};
                  f.kv["tokenizer.ggml.token_type"].array_size = 2;
                  Tokenizer::from_gguf(f);
              }).find("2 token types for 4 tokens"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  auto f = gguf_tokenizer("llama", "default");
                  Tokenizer::from_gguf(f);  // no scores
              }).find("missing tokenizer metadata 'tokenizer.ggml.scores'"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  auto f = gguf_tokenizer("gpt2", "llama-bpe");
                  f.kv.erase("tokenizer.ggml.model");
                  Tokenizer::from_gguf(f);
              }).find("no tokenizer metadata"),
              std::string::npos);
    EXPECT_NE(error_of([] {
                  auto f = gguf_tokenizer("gpt2", "llama-bpe");
                  GgufValue on;
                  on.type = GgufType::boolean;
                  on.integer = 1;
                  f.kv["tokenizer.ggml.add_bos_token"] = on;  // but no bos_token_id
                  Tokenizer::from_gguf(f);
              }).find("add_bos_token is set but bos_token_id is missing"),
              std::string::npos);
}

}  // namespace
}  // namespace tps
