// The paged KV cache on the device: storing a step's K and V at its tokens' slots, and causal
// grouped-query attention of each token over its own sequence up to its position. Long contexts
// are split along the sequence into `splits` parts whose partial softmaxes are combined after.
// Cache layout per layer: K plane then V plane, each [blocks][block_tokens][kv_heads][head_dim].
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

// A step's token placement, uploaded once per step (Backend::begin_step).
struct StepView {
    const int32_t* positions = nullptr;  // per token
    const int32_t* sequence = nullptr;   // per token: its sequence
    const int32_t* block_off = nullptr;  // per sequence: first entry in `blocks` (sequences + 1)
    const int32_t* blocks = nullptr;     // block tables, end to end
    int64_t tokens = 0;
};

struct KvStoreParams {
    const float* k = nullptr;  // (tokens, kv_heads * head_dim)
    const float* v = nullptr;
    void* k_plane = nullptr;
    void* v_plane = nullptr;
    KvFormat format = KvFormat::f32;
    int64_t stride = 0;  // kv_heads * head_dim
    int64_t block_tokens = 16;
    StepView step;
};

struct AttentionParams {
    const float* q = nullptr;  // (tokens, heads * head_dim)
    float* out = nullptr;      // same shape
    const void* k_plane = nullptr;
    const void* v_plane = nullptr;
    KvFormat format = KvFormat::f32;
    int64_t heads = 0, kv_heads = 0, head_dim = 0;
    int64_t block_tokens = 16;
    StepView step;
    // parts each token's keys are split into: part i takes keys [i c, (i + 1) c) where c is
    // ceil(keys / splits) rounded up to whole tiles (parts past the end are empty), so one launch
    // serves sequences of any length (a replayed graph keeps `splits`)
    int64_t splits = 1;
    float* partial = nullptr;   // splits > 1: tokens * heads * splits * (head_dim + 2) floats
    // prefill (invoke_attention_prefill): query tile i is the step's tokens [tiles[i],
    // tiles[i + 1]), of one sequence, at most attention_tile_tokens(heads / kv_heads) of them
    const int32_t* tiles = nullptr;
    int64_t n_tiles = 0;
};

inline constexpr int kAttentionTile = 32;  // keys per shared-memory tile: one per lane
inline constexpr int kAttentionMaxGroup = 16;
inline constexpr int kAttentionMaxHeadDim = 256;
inline constexpr int kAttentionTileRows = 64;  // prefill: query rows (tokens x group) per block

bool kv_store_supported(const KvStoreParams& p);
void invoke_kv_store(const KvStoreParams& p, cudaStream_t stream);

bool attention_supported(const AttentionParams& p);
// How many parts to split sequences of up to `max_keys` keys into, so that `tokens` tokens fill
// `multiprocessors` (no part shorter than 8 tiles at max_keys).
int64_t attention_split(int64_t tokens, int64_t kv_heads, int64_t max_keys, int multiprocessors);
int64_t attention_partial_floats(const AttentionParams& p);
void invoke_attention(const AttentionParams& p, cudaStream_t stream);

// Prefill (attention_prefill.cu): each query tile's tokens share every key and value tile, so a
// step where sequences bring many tokens reads its keys once per tile, not once per token. Heads
// of up to 128; splits are not used.
int64_t attention_tile_tokens(int64_t group);
bool attention_prefill_supported(const AttentionParams& p);
void invoke_attention_prefill(const AttentionParams& p, cudaStream_t stream);

}  // namespace tps::cuda
