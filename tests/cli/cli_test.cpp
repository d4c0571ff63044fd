// Runs the tpserve binary: exit codes (0 plan, 2 usage, 1 bad file, 3 nothing fits), errors as
// one line naming the flag, and the planner results the README shows.
#include "cli_run.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
using tps::test::has;
using tps::test::lines;
using tps::test::Outcome;
using tps::test::slurp;
using tps::test::tpserve;

void expect_usage(const std::string& args, const std::string& needle) {
    const Outcome r = tpserve(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_TRUE(has(r.err, needle)) << args << "\n" << r.err;
    EXPECT_EQ(lines(r.err), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(Cli, HelpAndUnknownCommands) {
    const Outcome help = tpserve("--help");
    EXPECT_EQ(help.code, 0);
    EXPECT_TRUE(has(help.out, "plan"));
    EXPECT_EQ(tpserve("").code, 2);
    const Outcome bogus = tpserve("frobnicate");
    EXPECT_EQ(bogus.code, 2);
    EXPECT_TRUE(has(bogus.err, "unknown command 'frobnicate'"));
    const Outcome plan_help = tpserve("plan --help");
    EXPECT_EQ(plan_help.code, 0);
    for (const char* flag : {"--model", "--gpus", "--format", "--budget", "--link", "--p2p", "--max-batch",
                             "--max-context", "--kv-dtype", "--objective", "--json", "--out"}) {
        EXPECT_TRUE(has(plan_help.out, flag)) << flag;
    }
    EXPECT_TRUE(has(tpserve("--version").out, "tpserve 0."));
}

TEST(Cli, BadFlagsAndValuesAreOneLineAndExit2) {
    const std::string base = "plan -m llama-3.1-8b -g 2xrtx5090 ";
    expect_usage(base + "--bogus", "bogus");
    expect_usage(base + "--max-batch abc", "--max-batch: 'abc' is not an integer");
    expect_usage(base + "--max-batch 0", "--max-batch: 0 is out of range");
    expect_usage(base + "--max-context 999999", "--max-context: 999999 exceeds the model's context length 131072");
    expect_usage(base + "--kv-dtype q4_k", "--kv-dtype: 'q4_k'");
    expect_usage(base + "--objective fastest", "--objective: 'fastest'");
    expect_usage(base + "--format int3", "--format: 'int3'");
    expect_usage(base + "--budget 24:20", "--budget: '24:20': the minimum 24 GiB is above the maximum 20 GiB");
    expect_usage(base + "--budget 20:40", "exceeds card 0 (rtx5090) capacity");
    expect_usage(base + "--link pcie9", "--link: 'pcie9'");
    expect_usage(base + "--p2p maybe", "--p2p: 'maybe'");
    expect_usage(base + "stray", "unexpected argument 'stray'");
    expect_usage("plan -m llama-3.1-8b -g 4xrtx9090", "--gpus: unknown device 'rtx9090'");
    expect_usage("plan -m llama-3.1-8b -g ''", "--gpus: no devices");
    expect_usage("plan -g 2xrtx5090", "--model is required");
    expect_usage("plan -m llama-3.1-8b", "--gpus is required");
    expect_usage("plan -m no-such-model -g 2xrtx5090", "--model: 'no-such-model' is not a preset");
    expect_usage(base + "--link-profile /nonexistent --link pcie4", "--link-profile replaces --link");
    expect_usage("plan -m llama-3.1-8b -g 2xrtx5090 --out /nonexistent-dir/plan.json", "--out: cannot write");
}

TEST(Cli, BadFilesExit1) {
    const Outcome missing_profile = tpserve("plan -m llama-3.1-8b -g 2xrtx5090 --link-profile /nonexistent/link.json");
    EXPECT_EQ(missing_profile.code, 1);
    EXPECT_TRUE(has(missing_profile.err, "/nonexistent/link.json: cannot open")) << missing_profile.err;
    const fs::path dir = fs::temp_directory_path() / ("tps-cli-model-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << R"({"model_type": "llama", "hidden_size": 64})";
    const Outcome broken = tpserve("plan -m " + dir.string() + " -g 2xrtx5090");
    EXPECT_EQ(broken.code, 1);
    EXPECT_TRUE(has(broken.err, "missing required field \"intermediate_size\"")) << broken.err;
    EXPECT_EQ(lines(broken.err), 1);
    fs::remove_all(dir);
    const Outcome corrupt = tpserve(std::string("plan -m ") + TPS_SOURCE_DIR + "/tests/fixtures/gguf/truncated.gguf -g 2xrtx5090");
    EXPECT_EQ(corrupt.code, 1);
    EXPECT_TRUE(has(corrupt.err, "truncated or corrupt")) << corrupt.err;
}

TEST(Cli, GpusAutoWithoutAGpuSaysSo) {
    const Outcome r = tpserve("plan -m llama-3.1-8b -g auto");
    if (r.code == 0) GTEST_SKIP() << "this machine has a CUDA device";
    EXPECT_EQ(r.code, 2);
    EXPECT_TRUE(has(r.err, "--gpus auto: no CUDA device found")) << r.err;
}

TEST(Cli, Llama70bBf16On4x5090Exits3WithSuggestions) {
    const Outcome r = tpserve("plan -m llama-3.1-70b -g 4xrtx5090");
    EXPECT_EQ(r.code, 3);
    EXPECT_TRUE(has(r.out, "nothing fits")) << r.out;
    EXPECT_TRUE(has(r.out, "int8 weights (67.7 GiB")) << r.out;
    EXPECT_TRUE(has(r.out, "6 x rtx5090")) << r.out;
    const Outcome j = tpserve("plan -m llama-3.1-70b -g 4xrtx5090 --json");
    EXPECT_EQ(j.code, 3);
    const auto doc = nlohmann::json::parse(j.out);
    EXPECT_FALSE(doc["feasible"].get<bool>());
    EXPECT_GE(doc["suggestions"].size(), 2u);
}

TEST(Cli, Llama70bInt8On4x5090TableAndJson) {
    const Outcome r = tpserve("plan -m llama-3.1-70b -g 4xrtx5090 --format int8");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "plan     tp4")) << r.out;
    EXPECT_TRUE(has(r.out, "rtx5090 #3")) << r.out;
    EXPECT_TRUE(has(r.out, "all-reduces over PCIe 5.0 without P2P")) << r.out;
    EXPECT_TRUE(has(r.out, "other shapes, best first")) << r.out;
    const fs::path out = fs::temp_directory_path() / ("tps-cli-plan-" + std::to_string(::getpid()) + ".json");
    const Outcome j = tpserve("plan -m llama-3.1-70b -g 4xrtx5090 --format int8 --json --out " + out.string());
    EXPECT_EQ(j.code, 0);
    const auto doc = nlohmann::json::parse(j.out);
    EXPECT_EQ(doc, nlohmann::json::parse(slurp(out)));
    EXPECT_EQ(doc["schema"], "tpserve.plan/1");
    EXPECT_EQ(doc["world_size"], 4);
    for (const auto& rank : doc["per_rank"]) {
        EXPECT_GE(rank["bytes"]["total"].get<int64_t>(), rank["band"]["min_bytes"].get<int64_t>());
        EXPECT_LE(rank["bytes"]["total"].get<int64_t>(), rank["band"]["max_bytes"].get<int64_t>());
    }
    fs::remove(out);
}

TEST(Cli, TheOtherReadmeResults) {
    const Outcome qwen = tpserve("plan -m qwen2.5-32b -g 3xrtx5090");
    EXPECT_EQ(qwen.code, 0) << qwen.err;
    EXPECT_TRUE(has(qwen.out, "tp=3 does not divide 40 attention heads")) << qwen.out;
    EXPECT_TRUE(has(qwen.out, "plan     pp")) << qwen.out;
    const Outcome smol = tpserve("plan -m smollm2-135m -g 2xcpu");
    EXPECT_EQ(smol.code, 0) << smol.err;
    EXPECT_TRUE(has(smol.out, "plan     pp2")) << smol.out;
    EXPECT_TRUE(has(smol.out, "tp=2 does not divide 9 attention heads")) << smol.out;
    const Outcome mixed = tpserve("plan -m qwen2.5-32b -g rtx5090,rtx5090,rtx4090 --format int8 --json");
    EXPECT_EQ(mixed.code, 0) << mixed.err;
    const auto doc = nlohmann::json::parse(mixed.out);
    for (const auto& rank : doc["per_rank"]) {
        if (rank["device_name"] == "rtx4090") {
            EXPECT_LE(rank["bytes"]["total"].get<int64_t>(), int64_t{18} << 30);
        }
    }
}

TEST(Cli, GgufModelsPlanFromTheirMetadata) {
    const Outcome r = tpserve(std::string("plan -m ") + TPS_SOURCE_DIR + "/tests/fixtures/gguf/tiny-llama-mixed.gguf -g 2xcpu:4:10:0.1");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(has(r.out, "q4_k + q6_k + q8_0")) << r.out;
    const Outcome fmt = tpserve(std::string("plan -m ") + TPS_SOURCE_DIR + "/tests/fixtures/gguf/tiny-llama-mixed.gguf -g 2xcpu:4:10:0.1 --format int8");
    EXPECT_EQ(fmt.code, 2);
    EXPECT_TRUE(has(fmt.err, "tensor types are fixed by the file")) << fmt.err;
}

TEST(Cli, ServeRefusesBadModelFlagsBeforeListening) {
    const std::string tiny = std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/smollm2";
    for (const auto& [args, needle] : std::vector<std::pair<std::string, std::string>>{
             {"--generation-config vllm", "--generation-config: 'vllm'"},
             {"--prefix-cache maybe", "--prefix-cache: 'maybe' is not on or off"},
             {"--tool-call-parser pythonic", "--tool-call-parser: 'pythonic' is not auto, none, hermes, llama3_json or mistral"},
             {"--reasoning-parser r1", "--reasoning-parser: 'r1' is not deepseek_r1, qwen3, none or auto"},
             {"--api-key ''", "--api-key: the key is empty"},
             {"--format int9", "--format: 'int9'"},
             {"--served-model-name a,,b", "--served-model-name: 'a,,b' holds an empty name"},
             {"--served-model-name a,", "--served-model-name: 'a,' holds an empty name"},
             {"--served-model-name a,b,a", "--served-model-name: 'a' is given twice"},
             {"--log-stats-interval -1", "--log-stats-interval"},
             {"--allowed-origins a,,b", "--allowed-origins: 'a,,b' holds an empty entry"},
             {"--allowed-origins '' --allow-credentials", "--allow-credentials needs --allowed-origins"}}) {
        expect_usage("serve -m " + tiny + " --port 0 " + args, needle);
    }
}

}  // namespace
