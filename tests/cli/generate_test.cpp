// `tpserve generate` as a user runs it: the real SmolLM2-135M-Instruct (fetched by scripts/setup)
// answers as transformers does, text streams to stdout and speeds to stderr, stop strings cut
// the output, and bad input is one line and a clear exit code.
#include "cli_run.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cctype>

#include <filesystem>

namespace {

namespace fs = std::filesystem;
using tps::test::has;
using tps::test::lines;
using tps::test::tpserve;

std::string smollm2() { return std::string(TPS_SOURCE_DIR) + "/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

TEST(Generate, RealModelAnswersAsTransformersDoes) {
    if (!fs::exists(smollm2())) GTEST_SKIP() << smollm2() << " is missing: scripts/setup fetches it";
    // greedy, the chat template's default system prompt, stopped by <|im_end|> (tests/fixtures/smollm2/reference.json)
    const auto chat = tpserve("generate -m " + smollm2() + " --chat -p 'What is the capital of France?' --threads 2");
    ASSERT_EQ(chat.code, 0) << chat.err;
    EXPECT_EQ(chat.out, "The capital of France is Paris.\n");
    EXPECT_TRUE(has(chat.err, "prefill: ")) << chat.err;
    EXPECT_TRUE(has(chat.err, "stop: stop")) << chat.err;
    const auto story = tpserve("generate -m " + smollm2() + " -p 'Once upon a time, in a small village by the sea,' -n 16");
    ASSERT_EQ(story.code, 0) << story.err;
    EXPECT_EQ(story.out, " there was a wise old wizard named Thorold. He lived in a tower\n");
    EXPECT_TRUE(has(story.err, "decode: 16 tokens")) << story.err;
    EXPECT_TRUE(has(story.err, "stop: length")) << story.err;
}

TEST(Generate, StopStringsSamplingAndMemoryReport) {
    if (!fs::exists(smollm2())) GTEST_SKIP() << smollm2() << " is missing: scripts/setup fetches it";
    const auto stopped = tpserve("generate -m " + smollm2() + " --chat -p 'What is the capital of France?' --stop Paris");
    ASSERT_EQ(stopped.code, 0) << stopped.err;
    EXPECT_EQ(stopped.out, "The capital of France is \n");
    const std::string sampled = "generate -m " + smollm2() + " -p 'The weather today' -n 12 --temperature 0.9 --top-p 0.9 --seed 7";
    const auto a = tpserve(sampled);
    const auto b = tpserve(sampled);
    ASSERT_EQ(a.code, 0) << a.err;
    EXPECT_EQ(a.out, b.out);  // same seed, same text
    const auto verbose = tpserve("generate -m " + smollm2() + " -p Hi -n 2 --verbose --max-context 512");
    ASSERT_EQ(verbose.code, 0) << verbose.err;
    EXPECT_TRUE(has(verbose.err, "plan predicts")) << verbose.err;
    // weights and KV to the byte; the whole within a few percent
    for (const char* row : {"weights", "kv_cache"}) {
        const auto at = verbose.err.find(std::string("  ") + row);
        ASSERT_NE(at, std::string::npos) << verbose.err;
        EXPECT_NE(verbose.err.substr(at, verbose.err.find('\n', at) - at).find("exact"), std::string::npos) << verbose.err;
    }
}

// --json-schema / --regex / --grammar: the random fixture model writes what the format admits, and ends there;
// a format that cannot be enforced is a usage error naming the flag.
TEST(Generate, OutputFormats) {
    const std::string tiny = std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/smollm2";
    const auto json = tpserve("generate -m " + tiny + R"( -p Hi -n 60 --temperature 1 --seed 3 --json-schema '{"type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["ok", "n"]}')");
    ASSERT_EQ(json.code, 0) << json.err;
    const auto parsed = nlohmann::json::parse(json.out, nullptr, false);
    ASSERT_TRUE(parsed.is_object()) << json.out;
    EXPECT_TRUE(parsed["ok"].is_boolean()) << json.out;
    EXPECT_TRUE(parsed["n"].is_number_integer() && parsed["n"] >= 1 && parsed["n"] <= 9) << json.out;
    EXPECT_TRUE(has(json.err, "stop: stop")) << json.err;
    const auto code = tpserve("generate -m " + tiny + " -p Hi -n 20 --temperature 1 --seed 4 --regex '[A-Z]{3}-[0-9]{2}'");
    ASSERT_EQ(code.code, 0) << code.err;
    ASSERT_EQ(code.out.size(), 7u) << code.out;  // (and the newline print_speed ends stdout with)
    EXPECT_TRUE(std::isupper(static_cast<unsigned char>(code.out[0])) && code.out[3] == '-') << code.out;
    const auto gbnf = tpserve("generate -m " + tiny + R"( -p Hi -n 20 --temperature 1 --seed 5 --grammar 'root ::= "<" [x-z]{2} ">"')");
    ASSERT_EQ(gbnf.code, 0) << gbnf.err;
    ASSERT_EQ(gbnf.out.size(), 5u) << gbnf.out;
    EXPECT_TRUE(gbnf.out[0] == '<' && gbnf.out[1] >= 'x' && gbnf.out[1] <= 'z' && gbnf.out[3] == '>') << gbnf.out;
    auto usage = [](const std::string& args, const std::string& needle) {
        const auto r = tpserve(args);
        EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
        EXPECT_TRUE(has(r.err, needle)) << args << "\n" << r.err;
    };
    usage("generate -m " + tiny + R"( -p hi --json-schema '{"type": "integer", "multipleOf": 2}')", "--json-schema: JSON schema: 'multipleOf'");
    usage("generate -m " + tiny + " -p hi --regex 'a(?=b)'", "--regex: regular expression");
    usage("generate -m " + tiny + " -p hi --regex a --json-object", "give one");
    usage("generate -m " + tiny + " -p hi --grammar 'root ::= x'", "--grammar: GBNF: line 1, column 10: the rule 'x' is used");
    usage("generate -m " + tiny + " -p hi --grammar-file /nonexistent.gbnf", "cannot read the file '/nonexistent.gbnf'");
    usage("generate -m " + tiny + " -p hi --json-schema-file /nonexistent.json", "cannot read the file '/nonexistent.json'");
}

TEST(Generate, TinyFixturesRunFromHfDirectories) {
    for (const char* m : {"llama2", "llama3", "mistral", "qwen2", "smollm2"}) {
        const auto r = tpserve(std::string("generate -m ") + TPS_SOURCE_DIR + "/tests/fixtures/models/" + m +
                               " --chat -p 'Hello there' -n 5");
        EXPECT_EQ(r.code, 0) << m << ": " << r.err;
        EXPECT_TRUE(has(r.err, "prefill: ")) << m << ": " << r.err;
    }
}

TEST(Generate, Int8WeightsLoadAsThePlanPredicts) {
    // --format int8 quantizes the layers as they load: the plan is made for int8 and the weights
    // the engine holds are what it predicts, to the byte
    const std::string llama3 = std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/llama3";
    const auto r = tpserve("generate -m " + llama3 + " -p 'Hello there' -n 4 --format int8 --verbose");
    ASSERT_EQ(r.code, 0) << r.err;
    const auto at = r.err.find("  weights");
    ASSERT_NE(at, std::string::npos) << r.err;
    EXPECT_TRUE(has(r.err.substr(at, r.err.find('\n', at) - at), "exact")) << r.err;
    EXPECT_TRUE(has(r.err, "decode: 4 tokens")) << r.err;
    // a q8_0 conversion works the same way
    const auto q8 = tpserve("generate -m " + llama3 + " -p 'Hello there' -n 2 --format q8_0");
    EXPECT_EQ(q8.code, 0) << q8.err;
}

// --backend cuda writes the CPU's text, greedy, byte for byte: a Llama 3, a Q4_K_M GGUF and
// Mixtral, on a GPU or (the asan build) the host CUDA emulator; elsewhere skipped, saying why.
TEST(Generate, TheCudaBackendWritesTheCpusText) {
    // the emulated device, for this test's tpserve only (the others must see none)
    struct Emulated {
        Emulated() {
            if (TPS_CUDA_EMULATED_BUILD) ::setenv("TPS_CUDA_EMULATE", "1", 1);
        }
        ~Emulated() { ::unsetenv("TPS_CUDA_EMULATE"); }
    } emulated;
    for (const char* m : {"llama3", "llama3-gguf-q4_k_m/llama3-wide-Q4_K_M.gguf", "mixtral"}) {
        const std::string args =
            std::string("generate -m ") + TPS_SOURCE_DIR + "/tests/fixtures/models/" + m + " -p 'The quick brown fox' -n 12";
        const auto gpu = tpserve(args + " --backend cuda");
        if (gpu.code != 0 && !TPS_CUDA_EMULATED_BUILD && has(gpu.err, "CUDA")) GTEST_SKIP() << gpu.err;
        ASSERT_EQ(gpu.code, 0) << m << ": " << gpu.err;
        const auto cpu = tpserve(args + " --backend cpu");
        ASSERT_EQ(cpu.code, 0) << m << ": " << cpu.err;
        EXPECT_FALSE(gpu.out.empty()) << m;
        EXPECT_EQ(gpu.out, cpu.out) << m;
        EXPECT_TRUE(has(gpu.err, "decode: ")) << m << ": " << gpu.err;
    }
}

TEST(Generate, BadInputIsOneLine) {
    auto usage = [](const std::string& args, const std::string& needle) {
        const auto r = tpserve(args);
        EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
        EXPECT_TRUE(has(r.err, needle)) << args << "\n" << r.err;
        EXPECT_EQ(lines(r.err), 1) << r.err;
    };
    const std::string tiny = std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/smollm2";
    usage("generate -p hi", "--model is required");
    usage("generate -m " + tiny, "--prompt is required");
    usage("generate -m " + tiny + " -p hi --temperature -1", "temperature");
    usage("generate -m " + tiny + " -p hi --top-p 2", "top_p");
    usage("generate -m " + tiny + " -p hi -n 0", "--max-tokens");
    usage("generate -m " + tiny + " -p hi --kv-dtype q8_0", "--kv-dtype");
    usage("generate -m " + tiny + " -p hi --max-context 999999", "--max-context");
    usage("generate -m " + tiny + " -p hi --format int9", "--format: 'int9'");
    usage("generate -m " + tiny + " -p hi --format fp8", "does not quantize to it");
    usage("generate -m " + tiny + " -p hi --format iq4_xs", "it reads it from GGUF files");  // (reads, never writes)
    usage(std::string("generate -m ") + TPS_SOURCE_DIR + "/tests/fixtures/models/llama3-gguf-q8_0/llama3-tiny-Q8_0.gguf -p hi --format int8",
          "--format");
    usage("generate -m " + tiny + " -p hi --bogus", "bogus");
    usage("generate -m " + tiny + " -p hi --backend tpu", "--backend");
    usage("generate -m " + tiny + " -p hi --backend cuda --gpus 2xcpu", "--backend cuda");
    const auto missing = tpserve("generate -m /nonexistent/model -p hi");
    EXPECT_EQ(missing.code, 1) << missing.err;
    EXPECT_TRUE(has(missing.err, "/nonexistent/model")) << missing.err;
    // --backend cuda generates on a machine with a usable GPU, and elsewhere says why in one line
    const auto gpu = tpserve("generate -m " + tiny + " -p hi -n 2 --backend cuda");
    if (gpu.code == 0) {
        EXPECT_TRUE(has(gpu.err, "prefill: ")) << gpu.err;
    } else {
        // 1: no usable device; 2: a build without CUDA (the flag cannot work)
        EXPECT_TRUE(gpu.code == 1 || gpu.code == 2) << gpu.code << " " << gpu.err;
        EXPECT_TRUE(has(gpu.err, "CUDA")) << gpu.err;
        EXPECT_EQ(lines(gpu.err), 1) << gpu.err;
    }
    const auto corrupt = tpserve(std::string("generate -m ") + TPS_SOURCE_DIR + "/tests/fixtures/gguf/truncated.gguf -p hi");
    EXPECT_EQ(corrupt.code, 1) << corrupt.err;
}

}  // namespace
