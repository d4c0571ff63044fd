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

// Activations and workspace of the largest step (max(prefill_chunk, max_batch) tokens).
int64_t activation_bytes(const ModelDesc& model, const ServingShape& serving, int tp, DeviceKind kind,
                         bool last_stage);

// CUDA context + cuBLAS workspace + NCCL buffers (when the rank talks to others); 0 on a CPU.
int64_t runtime_bytes(const DeviceProfile& device, LinkKind link, bool communicates);

// Bytes of one activation element on this kind of device (bf16 on GPUs, f32 on CPUs).
int64_t activation_element_bytes(DeviceKind kind) noexcept;

// The runtime constants, exposed for docs and tests.
inline constexpr int64_t kCudaContextBytes = int64_t{512} << 20;
inline constexpr int64_t kCublasWorkspaceLarge = int64_t{32} << 20;  // sm_90, sm_10x, sm_12x
inline constexpr int64_t kCublasWorkspaceSmall = int64_t{4} << 20;   // other architectures
inline constexpr int64_t kNcclBytesPcie = int64_t{256} << 20;
inline constexpr int64_t kNcclBytesNvlink = int64_t{2} << 30;

}  // namespace tps
