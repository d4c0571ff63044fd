// Per-rank memory: weights exact to the byte from tensor shapes and formats and the
// tensor-parallel table; KV cache from layers, KV heads and tokens; activations of the largest
// step; runtime overhead from documented constants (docs/planner.md, "Memory model").
#pragma once

#include "tpserve/partition/device.h"
#include "tpserve/partition/model.h"
#include "tpserve/partition/plan.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace tps {

// Why `tp` ranks cannot split this model ("tp=3 does not divide 64 attention heads"), or nullopt.
std::optional<std::string> tp_incompatibility(const ModelDesc& model, int tp);

// KV heads each rank of a tp group holds: kv_heads / tp, or 1 when there are fewer KV heads than
// ranks (each head is then replicated on tp / kv_heads ranks).
int64_t kv_heads_per_rank(const ModelDesc& model, int tp) noexcept;

// Rows [first, last) of a vocabulary-parallel tensor held by tp rank `r`: slices of ceil(V / tp),
// the last one shorter.
std::pair<int64_t, int64_t> vocab_slice(int64_t vocab, int tp, int r) noexcept;

// Bytes of one tensor's shard on tp rank `r` (requires tp_incompatibility() == nullopt).
int64_t shard_bytes(const ModelDesc& model, const TensorSpec& t, int tp, int r);

// Weight bytes of layer `layer` on tp rank `r`.
int64_t layer_weight_bytes(const ModelDesc& model, int64_t layer, int tp, int r);

// Weight bytes of the tensors outside the layers (embedding, final norm, LM head, rope
// frequencies) on tp rank `r` of a stage; with tied embeddings a last stage that is not also the
// first holds its own copy of the embedding as the LM head.
int64_t global_weight_bytes(const ModelDesc& model, bool first_stage, bool last_stage, int tp, int r);

// KV bytes of one token in one layer on one rank.
int64_t kv_bytes_per_token_layer(const ModelDesc& model, int tp, DType kv_dtype);

// Activations and workspace of the largest step (max(prefill_chunk, max_batch) tokens): the
// engine's f32 step buffers, its logits rows (last stage), and on a GPU the step workspace
// (gpu_step_workspace). `samples`: the rank draws its sequences' tokens itself (a plan of one
// rank, which may run as one process: the backend then samples on the device).
int64_t activation_bytes(const ModelDesc& model, const ServingShape& serving, int tp, DeviceKind kind,
                         bool last_stage, bool samples);

// The CUDA backend's step workspace on one rank, reserved when the model is built:
//   gemm:      the largest cuBLAS product's x in 16 bits and, for int8 and GGML weights, a slice
//              of rows expanded to f16 (gpu_gemm_workspace_bytes of the rank's largest need);
//   attention: split-softmax partials of the decode attention, with kPlannedMultiprocessors;
//   sampling:  on a rank that samples (`samples`, the last stage), one round's sampling
//              parameters and penalty list (gpu_sampling_bytes of max_batch rows);
//   scratch:   the other small per-step buffers (ids, positions, block tables, picks),
//              kGpuStepScratchBytes.
struct GpuStepWorkspace {
    int64_t gemm = 0;
    int64_t attention = 0;
    int64_t sampling = 0;
    int64_t scratch = 0;
    int64_t total() const noexcept { return gemm + attention + sampling + scratch; }
};
GpuStepWorkspace gpu_step_workspace(const ModelDesc& model, const ServingShape& serving, int tp, bool last_stage,
                                    bool samples);

// Bytes the CUDA backend's sampling buffer takes for rounds of `rows` sampled rows over a
// vocabulary of `vocab`: each row's parameters, and a penalty list of up to `vocab` entries. A
// row penalises each token at most once, so one row's list always fits; the engine cuts a round
// whose rows together list more into smaller ones.
int64_t gpu_sampling_bytes(int64_t rows, int64_t vocab) noexcept;

// Workspace bytes the CUDA backend's GEMM takes for `tokens` tokens through a rows x cols weight
// stored as `dtype`: none up to kGpuGemvMaxTokens (the GEMV reads the weights as they are) or
// for f32 weights; else x rounded to 16 bits (to a 256-byte multiple) and, for int8 and block
// formats, up to kGpuGemmSliceBytes of rows expanded to f16.
int64_t gpu_gemm_workspace_bytes(int64_t tokens, int64_t rows, int64_t cols, DType dtype) noexcept;

// Floats of the decode attention's split-softmax partials for `tokens` tokens of this rank's
// heads: parts enough to fill twice `multiprocessors` (each part keeps head_dim + 2 floats per
// head), none when the tokens alone fill them.
int64_t gpu_attention_partial_floats(int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     int multiprocessors) noexcept;

// CUDA context + cuBLAS workspace + NCCL buffers (when the rank talks to others); 0 on a CPU.
int64_t runtime_bytes(const DeviceProfile& device, LinkKind link, bool communicates);

// Bytes of one activation element: every backend computes, holds and moves activations in f32.
inline constexpr int64_t kActivationBytes = 4;

// The runtime constants, exposed for docs and tests. The context: what an H200 had in use beyond
// our own allocations (791 MiB with int8 weights, docs/perf.md), rounded up; docs/planner.md.
inline constexpr int64_t kCudaContextBytes = int64_t{800} << 20;
inline constexpr int64_t kCublasWorkspaceLarge = int64_t{32} << 20;  // sm_90, sm_10x, sm_12x
inline constexpr int64_t kCublasWorkspaceSmall = int64_t{4} << 20;   // other architectures
inline constexpr int64_t kNcclBytesPcie = int64_t{256} << 20;
inline constexpr int64_t kNcclBytesNvlink = int64_t{2} << 30;
// The CUDA backend's step workspace (gpu_step_workspace); the engine's kernels use the same
// numbers, and a test holds the two to each other.
inline constexpr int64_t kGpuGemvMaxTokens = 8;
inline constexpr int64_t kGpuGemmSliceBytes = int64_t{64} << 20;
inline constexpr int kPlannedMultiprocessors = 256;  // more than any card has (an H100 132, an RTX 5090 170)
inline constexpr int64_t kGpuStepScratchBytes = int64_t{1} << 20;
// sizes of the engine's RowSampling and PenaltyEntry (llama_model.cpp asserts them)
inline constexpr int64_t kRowSamplingBytes = 40;
inline constexpr int64_t kPenaltyEntryBytes = 12;

}  // namespace tps
