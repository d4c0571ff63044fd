// Prefill attention, tiled along the queries as FlashAttention is: one block per (query tile, KV
// head), where a query tile is up to kAttentionTileRows / group consecutive tokens of one
// sequence (cut by the backend, AttentionParams::tiles). Each tile of 32 keys and values is
// loaded to shared memory once and serves every query row of the tile (its tokens times the KV
// head's query heads, up to 64 rows), where attention.cu's decode kernel loads it once per token.
//
// Threads: 16 row groups of 8 lanes, each group inside one warp. A thread scores rows
// rg + 16 i (i < 4) against keys lane + 8 j (j < 4) of a tile, so one pass over the head reads 8
// shared-memory floats for 16 products; it keeps the output of the same rows at dims lane + 8 c
// (c < DPT). The online softmax's row maximum and sum are reduced over a group's 8 lanes with
// shuffles, and a row's probabilities pass through shared memory to the lanes of the same group,
// so only the key and value loads need the whole block's barrier.
#include "attention.cuh"
#include "common.cuh"
#include "cuda_check.h"

#include <algorithm>

namespace tps::cuda {
namespace {

constexpr int kRows = kAttentionTileRows;
constexpr int kKeys = kAttentionTile;
constexpr int kLanes = 8;  // per row group
constexpr int kThreads = 128;
constexpr int kGroups = kThreads / kLanes;
constexpr int kRowsPerThread = kRows / kGroups;
constexpr int kKeysPerThread = kKeys / kLanes;
static_assert(kRowsPerThread * kGroups == kRows && kKeysPerThread * kLanes == kKeys && 32 % kLanes == 0);

// dims per lane for a head of `d`: the output tile's width is 8 of them
int dims_per_lane(int64_t d) { return d <= 32 ? 4 : d <= 64 ? 8 : 16; }

// q (rows x d+1), K tile (keys x d+1), V tile (keys x 8 DPT, zero past d), probabilities
// (rows x keys+1), and each row's position
size_t prefill_shared_bytes(int64_t d) {
    const int64_t v_cols = kLanes * dims_per_lane(d);
    return sizeof(float) * static_cast<size_t>(kRows * (d + 1) + kKeys * (d + 1) + kKeys * v_cols + kRows * (kKeys + 1)) +
           sizeof(int) * kRows;
}

// maximum and sum over a row group's 8 lanes, every lane getting the same bits (each butterfly
// step adds the same two values on both lanes)
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
    for (int o = 1; o < kLanes; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = 1; o < kLanes; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <KvFormat K, int DPT>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(AttentionParams p) {
    float* smem = tps_dynamic_shared<float>();
    // head, group and block sizes fit 32 bits (attention_supported); positions are int32
    const int D = static_cast<int>(p.head_dim);
    const int G = static_cast<int>(p.heads / p.kv_heads);
    constexpr int V = kLanes * DPT;
    float* q_s = smem;
    float* k_s = q_s + kRows * (D + 1);
    float* v_s = k_s + kKeys * (D + 1);
    float* p_s = v_s + kKeys * V;
    int* pos_s = reinterpret_cast<int*>(p_s + kRows * (kKeys + 1));

    const int64_t t0 = p.tiles[blockIdx.x];
    const int rows = static_cast<int>(p.tiles[blockIdx.x + 1] - t0) * G;  // row r: token t0 + r / G, head r % G
    const int64_t g = blockIdx.y;
    const int tid = static_cast<int>(threadIdx.x);
    const int lane = tid % kLanes, rg = tid / kLanes, warp = tid / 32, wl = tid % 32;
    const float scale = rsqrtf(static_cast<float>(D));

    // the tile's queries, scaled; rows past the tile are zero and see no key (position -1)
    for (int e = tid; e < kRows * D; e += kThreads) {
        const int r = e / D, d = e - r * D;
        q_s[r * (D + 1) + d] = r < rows ? p.q[(t0 + r / G) * p.heads * D + (g * G + r % G) * D + d] * scale : 0.0f;
    }
    for (int r = tid; r < kRows; r += kThreads) pos_s[r] = r < rows ? p.step.positions[t0 + r / G] : -1;
    // the value tile's columns past the head stay zero, so the output's spare dims add nothing
    for (int e = tid; e < kKeys * V; e += kThreads) {
        if (e % V >= D) v_s[e] = 0.0f;
    }
    __syncthreads();

    int n_keys = 0;  // the tile's longest causal prefix
    for (int r = 0; r < rows; r += G) n_keys = std::max(n_keys, pos_s[r] + 1);
    int my_pos[kRowsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) my_pos[i] = pos_s[rg + kGroups * i];
    const int32_t* blocks = p.step.blocks + p.step.block_off[p.step.sequence[t0]];
    const int64_t stride = p.kv_heads * D;
    const int block_tokens = static_cast<int>(p.block_tokens);

    float m[kRowsPerThread], l[kRowsPerThread], acc[kRowsPerThread][DPT];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPT; ++c) acc[i][c] = 0.0f;
    }

    for (int kb = 0; kb < n_keys; kb += kKeys) {
        const int nk = n_keys - kb < kKeys ? n_keys - kb : kKeys;
        __syncthreads();  // the previous tile's keys and values are consumed
        // a warp per key, its lanes along the head
        for (int j = warp; j < nk; j += kThreads / 32) {
            const int pos = kb + j;
            const int64_t at = (int64_t{blocks[pos / block_tokens]} * block_tokens + pos % block_tokens) * stride + g * D;
            for (int d = wl; d < D; d += 32) {
                k_s[j * (D + 1) + d] = load_kv<K>(p.k_plane, at + d);
                v_s[j * V + d] = load_kv<K>(p.v_plane, at + d);
            }
        }
        __syncthreads();

        float s[kRowsPerThread][kKeysPerThread];
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
            for (int j = 0; j < kKeysPerThread; ++j) s[i][j] = 0.0f;
        }
        for (int d = 0; d < D; ++d) {
            float qv[kRowsPerThread], kv[kKeysPerThread];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) qv[i] = q_s[(rg + kGroups * i) * (D + 1) + d];
#pragma unroll
            for (int j = 0; j < kKeysPerThread; ++j) kv[j] = k_s[(lane + kLanes * j) * (D + 1) + d];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
                for (int j = 0; j < kKeysPerThread; ++j) s[i][j] += qv[i] * kv[j];
            }
        }

        // online softmax per row: a key past the tile or after the row's position is masked
#pragma unroll
        for (int i = 0; i < kRowsPerThread; ++i) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < kKeysPerThread; ++j) {
                const int key = lane + kLanes * j;
                if (key >= nk || kb + key > my_pos[i]) s[i][j] = -INFINITY;
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            const float m_new = fmaxf(m[i], group_max(tile_max));
            const float base = m_new == -INFINITY ? 0.0f : m_new;  // a row with no key yet
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < kKeysPerThread; ++j) {
                const float e = expf(s[i][j] - base);
                p_s[(rg + kGroups * i) * (kKeys + 1) + lane + kLanes * j] = e;
                sum += e;
            }
            const float alpha = expf(m[i] - base);  // 0 on the row's first keys
            l[i] = l[i] * alpha + group_sum(sum);
            m[i] = m_new;
#pragma unroll
            for (int c = 0; c < DPT; ++c) acc[i][c] *= alpha;
        }
        __syncwarp();  // a row's probabilities were written by its group's lanes, in this warp

        for (int k = 0; k < nk; ++k) {
            float pv[kRowsPerThread], vv[DPT];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) pv[i] = p_s[(rg + kGroups * i) * (kKeys + 1) + k];
#pragma unroll
            for (int c = 0; c < DPT; ++c) vv[c] = v_s[k * V + lane + kLanes * c];
#pragma unroll
            for (int i = 0; i < kRowsPerThread; ++i) {
#pragma unroll
                for (int c = 0; c < DPT; ++c) acc[i][c] += pv[i] * vv[c];
            }
        }
    }

#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
        const int r = rg + kGroups * i;
        if (r >= rows) continue;
        float* out = p.out + (t0 + r / G) * p.heads * D + (g * G + r % G) * D;
#pragma unroll
        for (int c = 0; c < DPT; ++c) {
            const int d = lane + kLanes * c;
            if (d < D) out[d] = acc[i][c] / l[i];
        }
    }
}

template <KvFormat K, int DPT>
void launch_prefill(const AttentionParams& p, cudaStream_t stream) {
    const size_t shared = prefill_shared_bytes(p.head_dim);
    TPS_CHECK_CUDA(cudaFuncSetAttribute(attention_prefill_kernel<K, DPT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
    const dim3 grid(static_cast<unsigned>(p.n_tiles), static_cast<unsigned>(p.kv_heads));
    launch_kernel(attention_prefill_kernel<K, DPT>, grid, kThreads, shared, stream, p);
}

template <KvFormat K>
void launch_prefill(const AttentionParams& p, cudaStream_t stream) {
    switch (dims_per_lane(p.head_dim)) {
        case 4: launch_prefill<K, 4>(p, stream); break;
        case 8: launch_prefill<K, 8>(p, stream); break;
        default: launch_prefill<K, 16>(p, stream); break;
    }
}

}  // namespace

int64_t attention_tile_tokens(int64_t group) { return std::max<int64_t>(1, kRows / std::max<int64_t>(1, group)); }

bool attention_prefill_supported(const AttentionParams& p) {
    return attention_supported(p) && p.head_dim <= kLanes * 16 && prefill_shared_bytes(p.head_dim) <= 96 * 1024;
}

void invoke_attention_prefill(const AttentionParams& p, cudaStream_t stream) {
    if (p.n_tiles == 0) return;
    switch (p.format) {
        case KvFormat::f32: launch_prefill<KvFormat::f32>(p, stream); break;
        case KvFormat::f16: launch_prefill<KvFormat::f16>(p, stream); break;
        case KvFormat::bf16: launch_prefill<KvFormat::bf16>(p, stream); break;
    }
    TPS_CHECK_LAUNCH("attention_prefill");
}

}  // namespace tps::cuda
