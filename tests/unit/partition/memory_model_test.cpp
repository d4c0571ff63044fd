// The memory model: shards exact to the byte, the tensor-parallel rules, KV per token.
#include "tpserve/partition/memory_model.h"

#include "test_requests.h"
#include "tpserve/common/error.h"
#include "tpserve/common/strings.h"

#include <gtest/gtest.h>

namespace tps {
namespace {

TEST(MemoryModel, Llama70bInt8Tp4RankExact) {
    // tp rank 0 of 4, int8: per layer q 2048x8192 (+2048 f16 scales), k,v 256x8192 (+256), o 8192x2048
    // (+8192: a row-parallel shard keeps every row's scale), gate/up 7168x8192 (+7168), down
    // 8192x7168 (+8192), norms 2x8192 held as f32 = 214,041,600 bytes; x80 = 17,123,328,000.
    // Embedding and LM head: 32064 of 128256 rows x 8192 x 2 bytes each; final norm 32,768 (f32).
    ModelDesc m = load_model("llama-3.1-70b");
    apply_weight_format(m, DType::int8);
    EXPECT_EQ(layer_weight_bytes(m, 0, 4, 0), 214041600);
    EXPECT_EQ(global_weight_bytes(m, true, true, 4, 0), 2 * int64_t{525336576} + 32768);
    int64_t rank0 = global_weight_bytes(m, true, true, 4, 0);
    for (int64_t l = 0; l < m.layers; ++l) rank0 += layer_weight_bytes(m, l, 4, 0);
    EXPECT_EQ(rank0, 18174033920);
    // four shards hold the whole model (norms bf16 in the checkpoint, f32 when held) plus what tp
    // replicates: per layer the o and down scales (2 x 16,384) three extra times, and the norms
    // four times at f32 (4 x 65,536) against once at bf16 (32,768); the final norm likewise
    int64_t all = 0;
    for (int r = 0; r < 4; ++r) {
        all += global_weight_bytes(m, true, true, 4, r);
        for (int64_t l = 0; l < m.layers; ++l) all += layer_weight_bytes(m, l, 4, r);
    }
    EXPECT_EQ(all - total_weight_bytes(m), 80 * (3 * 2 * 16384 + 4 * 65536 - 32768) + 4 * 32768 - 16384);
}

TEST(MemoryModel, ShardsSumToTheModelWhenNothingIsReplicated) {
    // bf16 without biases: at tp=2 only the norms are replicated (and held as f32).
    const ModelDesc m = load_model("llama-3.1-8b");
    int64_t all = 0;
    for (int r = 0; r < 2; ++r) {
        all += global_weight_bytes(m, true, true, 2, r);
        for (int64_t l = 0; l < m.layers; ++l) all += layer_weight_bytes(m, l, 2, r);
    }
    const int64_t norms = (32 * 2 + 1) * 4096;
    EXPECT_EQ(all, total_weight_bytes(m) + 2 * norms * 4 - norms * 2);
}

TEST(MemoryModel, VocabSlicesAreUnevenAtTheEnd) {
    EXPECT_EQ(vocab_slice(10, 4, 0), std::make_pair(int64_t{0}, int64_t{3}));
    EXPECT_EQ(vocab_slice(10, 4, 3), std::make_pair(int64_t{9}, int64_t{10}));
    EXPECT_EQ(vocab_slice(2, 4, 3), std::make_pair(int64_t{2}, int64_t{2}));  // more ranks than rows: empty
    int64_t covered = 0;
    for (int r = 0; r < 3; ++r) {
        const auto [a, b] = vocab_slice(152064, 3, r);
        EXPECT_EQ(a, covered);
        covered = b;
    }
    EXPECT_EQ(covered, 152064);
}

TEST(MemoryModel, TiedEmbeddingsCostTheLastStageACopy) {
    const ModelDesc m = load_model("smollm2-135m");
    const int64_t embed = 49152 * 576 * 2;
    EXPECT_EQ(global_weight_bytes(m, true, true, 1, 0), embed + 576 * 4);   // one stage: one matrix (+ f32 norm)
    EXPECT_EQ(global_weight_bytes(m, true, false, 1, 0), embed);            // first of two
    EXPECT_EQ(global_weight_bytes(m, false, true, 1, 0), embed + 576 * 4);  // last: its own copy as LM head
    EXPECT_EQ(global_weight_bytes(m, false, false, 1, 0), 0);
}

TEST(MemoryModel, TensorParallelRules) {
    const ModelDesc qwen = load_model("qwen2.5-32b");  // 40 heads, 8 KV heads
    EXPECT_EQ(tp_incompatibility(qwen, 3), "tp=3 does not divide 40 attention heads");
    EXPECT_FALSE(tp_incompatibility(qwen, 8).has_value());
    const ModelDesc smol = load_model("smollm2-135m");  // 9 heads, 3 KV heads
    EXPECT_EQ(tp_incompatibility(smol, 2), "tp=2 does not divide 9 attention heads");
    EXPECT_FALSE(tp_incompatibility(smol, 3).has_value());
    EXPECT_EQ(tp_incompatibility(smol, 9), "tp=9 does not divide the 1536 output rows of model.layers.0.mlp.gate_proj.weight");
    EXPECT_EQ(kv_heads_per_rank(smol, 3), 1);
    EXPECT_EQ(kv_heads_per_rank(qwen, 4), 2);
    // replicated KV heads: each of 16 ranks holds one of 8 heads' k and v rows
    const ModelDesc llama = load_model("llama-2-70b");
    const TensorSpec& k = llama.layer_tensors[0][2];
    ASSERT_EQ(k.name, "model.layers.0.self_attn.k_proj.weight");
    EXPECT_EQ(shard_bytes(llama, k, 16, 5), 128 * 8192 * 2);
    EXPECT_EQ(kv_bytes_per_token_layer(llama, 16, DType::bf16), 2 * 1 * 128 * 2);
    EXPECT_EQ(kv_bytes_per_token_layer(llama, 2, DType::fp8), 2 * 4 * 128 * 1);
}

TEST(MemoryModel, BlockAlignmentLimitsTensorParallelism) {
    // int4 groups of 128 along the input: tp=8 cuts llama-3.1-8b's 14336 down-projection inputs
    // into 1792 = 14 x 128 (fine). q4_k blocks of 256: tp=16 cuts them into 896 = 3.5 blocks.
    ModelDesc m = load_model("llama-3.1-8b");
    apply_weight_format(m, DType::int4);
    EXPECT_FALSE(tp_incompatibility(m, 8).has_value());
    ModelDesc k = load_model("llama-3.1-8b");
    apply_weight_format(k, DType::q4_k);
    EXPECT_FALSE(tp_incompatibility(k, 8).has_value());
    const auto why = tp_incompatibility(k, 16);
    ASSERT_TRUE(why.has_value());
    EXPECT_NE(why->find("into 896, not a multiple of q4_k's 256-element blocks"), std::string::npos) << *why;
    // a format whose blocks do not fit a row at all is refused when applied
    ModelDesc smol = load_model("smollm2-135m");
    EXPECT_THROW(apply_weight_format(smol, DType::q4_k), UsageError);  // 576 inputs = 2.25 blocks
}

TEST(MemoryModel, RuntimeConstants) {
    const auto devs = parse_device_list("rtx5090,rtx4090,cpu:8:10:1");
    EXPECT_EQ(runtime_bytes(devs[0], LinkKind::pcie5, false), kCudaContextBytes + kCublasWorkspaceLarge);
    EXPECT_EQ(runtime_bytes(devs[1], LinkKind::pcie5, true), kCudaContextBytes + kCublasWorkspaceSmall + kNcclBytesPcie);
    EXPECT_EQ(runtime_bytes(devs[0], LinkKind::nvlink, true), kCudaContextBytes + kCublasWorkspaceLarge + kNcclBytesNvlink);
    EXPECT_EQ(runtime_bytes(devs[2], LinkKind::host_memory, true), 0);
}

TEST(MemoryModel, ActivationsOfTheLargestStep) {
    const ModelDesc m = load_model("llama-3.1-8b");
    ServingShape s;
    s.max_batch = 8;
    s.prefill_chunk = 512;
    // 512 tokens x (3 x 4096 + 32x128/2 + 2 x 4x128 + 2 x 14336/2 + max(14336/2, 2048)) x 4 bytes at tp=2
    const int64_t per_token = 3 * 4096 + 2048 + 2 * 512 + 3 * 7168;
    EXPECT_EQ(activation_bytes(m, s, 2, DeviceKind::cpu, false, false), 512 * per_token * 4);
    // the last stage adds f32 logits of its vocabulary slice for every sequence: twice on a CPU
    // (the sampler's copy), once on a GPU
    EXPECT_EQ(activation_bytes(m, s, 2, DeviceKind::cpu, true, false), 512 * per_token * 4 + 2 * 8 * 64128 * 4);
    const GpuStepWorkspace ws = gpu_step_workspace(m, s, 2, false, false);
    EXPECT_EQ(activation_bytes(m, s, 2, DeviceKind::gpu, false, false), 512 * per_token * 4 + ws.total());
    EXPECT_EQ(activation_bytes(m, s, 2, DeviceKind::gpu, true, false),
              512 * per_token * 4 + 8 * 64128 * 4 + gpu_step_workspace(m, s, 2, true, false).total());
}

TEST(MemoryModel, GpuStepWorkspace) {
    ModelDesc m = load_model("llama-3.1-8b");
    ServingShape s;
    s.max_batch = 8;
    s.prefill_chunk = 512;
    // bf16: the widest product's x in 16 bits, the down projection's 14336/2 inputs
    GpuStepWorkspace ws = gpu_step_workspace(m, s, 2, false, false);
    EXPECT_EQ(ws.gemm, 512 * 7168 * 2);
    EXPECT_EQ(ws.scratch, kGpuStepScratchBytes);
    // the decode attention's partials (16 heads of 128 keep 130 floats per part): one token over 4
    // KV heads splits 2 x 256 / 4 = 128 ways; the most parts in all, 254, are 127 tokens' 508
    // blocks, just short of filling 512, each split in 2
    EXPECT_EQ(gpu_attention_partial_floats(1, 16, 4, 128, 256), 1 * 16 * 128 * 130);
    EXPECT_EQ(ws.attention, 127 * 16 * 2 * 130 * 4);
    EXPECT_EQ(gpu_attention_partial_floats(128, 16, 4, 128, 256), 0);  // 512 blocks fill 256 twice over
    EXPECT_EQ(gpu_attention_partial_floats(100, 16, 4, 128, 256), 100 * 16 * 2 * 130);
    // int8 adds a slice of rows expanded to bf16, at most 64 MiB: the down projection's 4096 rows
    // of 7168 fit whole (56 MiB), and with its x the largest need
    apply_weight_format(m, DType::int8);
    ws = gpu_step_workspace(m, s, 2, false, false);
    EXPECT_EQ(ws.gemm, 512 * 7168 * 2 + 4096 * 7168 * 2);
    // the LM head (bf16 here) on the last stage needs no expansion
    EXPECT_EQ(gpu_step_workspace(m, s, 2, true, false).gemm, ws.gemm);
    // Llama-3.1-70B at tp4: gate and up (7168 rows of 8192) take the whole 64 MiB slice (4096
    // rows) beside their x
    ModelDesc big = load_model("llama-3.1-70b");
    apply_weight_format(big, DType::int8);
    EXPECT_EQ(gpu_step_workspace(big, s, 4, false, false).gemm, 512 * 8192 * 2 + kGpuGemmSliceBytes);
    // only GEMVs (up to 8 tokens a step) need no GEMM workspace
    s.prefill_chunk = 8;
    EXPECT_EQ(gpu_step_workspace(m, s, 2, true, false).gemm, 0);
    EXPECT_EQ(gpu_gemm_workspace_bytes(9, 10, 100, DType::f32), 0);
    EXPECT_EQ(gpu_gemm_workspace_bytes(9, 10, 100, DType::bf16), 2048);  // 1800 rounded up to 256s
    EXPECT_EQ(gpu_gemm_workspace_bytes(9, 10, 100, DType::q8_0), 2048 + 10 * 100 * 2);
}

TEST(MemoryModel, GpuSamplingBuffer) {
    const ModelDesc m = load_model("llama-3.1-8b");
    ServingShape s;
    s.max_batch = 64;
    s.prefill_chunk = 512;
    // a rank that samples holds a round's parameters (40 bytes a row) and a penalty list as long
    // as the vocabulary (12 bytes an entry): 2,560 + 1,539,072 bytes for Llama 3's 128,256 tokens
    EXPECT_EQ(gpu_sampling_bytes(64, 128256), 64 * 40 + 128256 * 12);
    EXPECT_EQ(gpu_step_workspace(m, s, 1, true, true).sampling, gpu_sampling_bytes(64, 128256));
    EXPECT_EQ(gpu_step_workspace(m, s, 1, true, true).total(),
              gpu_step_workspace(m, s, 1, true, false).total() + gpu_sampling_bytes(64, 128256));
    // a rank that does not sample, or is not the last stage, holds none
    EXPECT_EQ(gpu_step_workspace(m, s, 1, true, false).sampling, 0);
    EXPECT_EQ(gpu_step_workspace(m, s, 1, false, true).sampling, 0);
    EXPECT_EQ(activation_bytes(m, s, 1, DeviceKind::gpu, true, true),
              activation_bytes(m, s, 1, DeviceKind::gpu, true, false) + gpu_sampling_bytes(64, 128256));
    // a CPU samples from its host copy of the logits
    EXPECT_EQ(activation_bytes(m, s, 1, DeviceKind::cpu, true, true), activation_bytes(m, s, 1, DeviceKind::cpu, true, false));
}

}  // namespace
}  // namespace tps
