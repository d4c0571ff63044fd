// What a rank holds for its steps against what the planner counts for it, to the byte, on every
// fixture, format and split: the engine's f32 step buffers (step_sizes), and on a GPU the
// workspace the CUDA backend reserves (the GEMM's 16-bit x and expanded rows, the split
// attention's partials, a sampling rank's parameters and penalties: step_workspace) plus the
// small per-step buffers. Host arithmetic only:
// these run, and must pass, where no GPU is.
#include "step_workspace.h"
#include "tpserve/engine/llama.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/memory_model.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>

namespace tps {
namespace {

struct Case {
    std::string dir;     // under tests/fixtures/models
    std::string file;    // a GGUF inside it, or ""
    std::string format;  // --format, or "" as stored
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.dir << (c.format.empty() ? "" : " " + c.format); }

class StepMemory : public ::testing::TestWithParam<Case> {};

TEST_P(StepMemory, EngineAndBackendHoldWhatThePlannerCounts) {
    const Case c = GetParam();
    std::string path = std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/" + c.dir;
    if (!c.file.empty()) path += "/" + c.file;
    ModelFiles files = ModelFiles::open(path);
    if (!c.format.empty()) files.store_layers_as(*parse_dtype(c.format));
    const ModelDesc& m = files.desc;

    // steps of only GEMVs (chunk 8), a GEMM just past them, and long chunks; batches below and
    // above the chunk
    const std::pair<int64_t, int64_t> shapes[] = {{8, 1}, {9, 4}, {64, 8}, {512, 64}, {16, 96}, {2048, 32}};
    int checked = 0;
    for (int tp : {1, 2, 4}) {
        if (tp_incompatibility(m, tp)) continue;
        // the whole model, and each stage of two
        const int64_t half = m.layers / 2;
        const ShardSpec stages[] = {{tp, 0, 0, -1, true, true}, {tp, 0, 0, half, true, false}, {tp, 0, half, m.layers, false, true}};
        for (const ShardSpec& shard : stages) {
            const LlamaWeights w = load_llama_weights(files.weights, m, shard);
            for (const auto& [chunk, batch] : shapes) {
                Plan plan;
                plan.serving.prefill_chunk = chunk;
                plan.serving.max_batch = batch;
                plan.kv_tokens = 1024;
                // one rank holding the whole model (a plan of one rank) samples its rows itself
                const bool samples = tp == 1 && shard.first_stage && shard.last_stage;
                const StepSizes sizes = step_sizes(m, w, model_options_for(plan), samples);
                const cuda::StepWorkspace ws = cuda::step_workspace(sizes.limits, kPlannedMultiprocessors);
                const GpuStepWorkspace planned = gpu_step_workspace(m, plan.serving, tp, shard.last_stage, samples);
                const std::string where = fmt::format("tp{} layers [{}, {}) chunk {} batch {}", tp, shard.first_layer,
                                                      shard.last_layer, chunk, batch);
                EXPECT_EQ(planned.gemm, ws.gemm) << where;
                EXPECT_EQ(planned.attention, ws.partial) << where;
                EXPECT_EQ(planned.sampling, ws.sampling) << where;
                EXPECT_EQ(ws.sampling > 0, samples) << where;
                EXPECT_EQ(activation_bytes(m, plan.serving, tp, DeviceKind::gpu, shard.last_stage, samples),
                          sizes.activation_bytes + ws.gemm + ws.partial + ws.sampling + kGpuStepScratchBytes)
                    << where;
                // a CPU's sampler keeps a working copy of the logits rows on the host
                const int64_t copy = shard.last_stage ? batch * w.lm_head.rows * 4 : 0;
                EXPECT_EQ(activation_bytes(m, plan.serving, tp, DeviceKind::cpu, shard.last_stage, samples),
                          sizes.activation_bytes + copy)
                    << where;
                // a real card has fewer multiprocessors than the planner assumes: never more
                EXPECT_LE(cuda::step_workspace(sizes.limits, 170).partial, ws.partial) << where;
                ++checked;
            }
        }
    }
    EXPECT_GE(checked, 18);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, StepMemory,
    ::testing::Values(Case{"llama3", "", ""}, Case{"llama3", "", "int8"}, Case{"llama3-bf16", "", ""},
                      Case{"llama3-f16", "", ""}, Case{"qwen2", "", ""}, Case{"qwen2", "", "int8"},
                      Case{"llama-bias", "", "q8_0"}, Case{"smollm2", "", ""}, Case{"mistral", "", "bf16"},
                      Case{"llama2", "", "q4_0"}, Case{"llama3-gguf-q8_0", "llama3-tiny-Q8_0.gguf", ""},
                      Case{"llama3-gguf-q4_1", "llama3-tiny-Q4_1.gguf", ""}),
    [](const ::testing::TestParamInfo<Case>& i) {
        std::string n = i.param.dir + (i.param.format.empty() ? "" : "_" + i.param.format);
        for (char& ch : n) {
            if (ch == '-' || ch == '.') ch = '_';
        }
        return n;
    });

}  // namespace
}  // namespace tps
