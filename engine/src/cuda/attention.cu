// Attention: one block per (token, KV head, part of the sequence). The block's `group` query heads
// share each tile of 32 keys and values loaded to shared memory, so K and V are read once per KV
// head, not once per query head; the softmax is online (running max and sum per head), one lane
// per key of the tile. Partial results of a split sequence are merged by a second kernel.
#include "attention.cuh"
#include "common.cuh"
#include "cuda_check.h"

#include <algorithm>

namespace tps::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTileLoads = 4;  // 16-byte pieces of K and of V a thread has in flight at once
constexpr int kAccPerThread = kAttentionMaxGroup * kAttentionMaxHeadDim / kThreads;

template <KvFormat K>
__global__ void kv_store_kernel(KvStoreParams p) {
    const int64_t t = blockIdx.x;
    const int64_t pos = p.step.positions[t];
    const int32_t* blocks = p.step.blocks + p.step.block_off[p.step.sequence[t]];
    const int64_t slot = static_cast<int64_t>(blocks[pos / p.block_tokens]) * p.block_tokens + pos % p.block_tokens;
    for (int64_t e = threadIdx.x; e < p.stride; e += blockDim.x) {
        store_kv<K>(p.k_plane, slot * p.stride + e, p.k[t * p.stride + e]);
        store_kv<K>(p.v_plane, slot * p.stride + e, p.v[t * p.stride + e]);
    }
}

size_t attention_shared_bytes(int64_t group, int64_t d) {
    // q (group x d), K tile (tile x d+1), V tile (tile x d), probabilities (group x tile), and per
    // head: max, sum, rescale
    return sizeof(float) * static_cast<size_t>(group * d + kAttentionTile * (d + 1) + kAttentionTile * d +
                                               group * kAttentionTile + 3 * group);
}

// Keys per part of a token's sequence of `n_keys` split `splits` ways: whole tiles, so parts past
// ceil(n_keys / chunk) have no keys (a graph's split is sized for the whole cache).
__device__ int64_t part_keys(int64_t n_keys, int64_t splits) {
    return ceil_div(ceil_div(n_keys, splits), kAttentionTile) * kAttentionTile;
}

// A tile's keys and values to shared memory, as floats: K at k_s[j * (D + 1) + d], V at
// v_s[j * D + d]. Where a head is whole 16-byte pieces (and the planes start aligned, as device
// allocations do) every thread takes pieces, up to kTileLoads of K and of V issued before any
// store, so a tile of heads of up to 128 16-bit or 64 f32 entries costs about one trip to memory
// (the block table's entry, then the piece) and larger ones a few; else a warp per key, its lanes
// along the head, one entry a load. (A branch, not a template parameter: the kernel's heavy part
// is compiled once.)
template <KvFormat K>
__device__ __forceinline__ void load_tile(const AttentionParams& p, const int32_t* blocks, int kb, int nk, int64_t g,
                                          float* k_s, float* v_s) {
    const int head_dim = static_cast<int>(p.head_dim), block_tokens = static_cast<int>(p.block_tokens);
    const int64_t stride = p.kv_heads * p.head_dim;
    // the key's slot is found in 32-bit arithmetic (64-bit division per element once cost more
    // than the whole tile's math)
    const auto entry = [&](int j) {
        const int pos = kb + j;
        return (int64_t{blocks[pos / block_tokens]} * block_tokens + pos % block_tokens) * stride + g * p.head_dim;
    };
    constexpr int E = kv_per_16<K>();
    const auto aligned = [](const void* at) { return reinterpret_cast<uintptr_t>(at) % 16 == 0; };
    if (head_dim % E == 0 && aligned(p.k_plane) && aligned(p.v_plane)) {
        const int pieces = head_dim / E, total = nk * pieces;
        for (int c0 = static_cast<int>(threadIdx.x); c0 < total; c0 += kThreads * kTileLoads) {
            uint4 kr[kTileLoads], vr[kTileLoads];
#pragma unroll
            for (int b = 0; b < kTileLoads; ++b) {
                const int c = c0 + b * kThreads;
                if (c < total) {
                    const int j = c / pieces;
                    const int64_t at = entry(j) + (c - j * pieces) * E;
                    kr[b] = load_kv16<K>(p.k_plane, at);
                    vr[b] = load_kv16<K>(p.v_plane, at);
                }
            }
#pragma unroll
            for (int b = 0; b < kTileLoads; ++b) {
                const int c = c0 + b * kThreads;
                if (c < total) {
                    const int j = c / pieces, d = (c - j * pieces) * E;
                    float f[E];
                    unpack_kv16<K>(kr[b], f);
#pragma unroll
                    for (int e = 0; e < E; ++e) k_s[j * (head_dim + 1) + d + e] = f[e];
                    unpack_kv16<K>(vr[b], f);
#pragma unroll
                    for (int e = 0; e < E; ++e) v_s[j * head_dim + d + e] = f[e];
                }
            }
        }
    } else {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        for (int j = warp; j < nk; j += kThreads / 32) {
            const int64_t at = entry(j);
            for (int d = lane; d < head_dim; d += 32) {
                k_s[j * (head_dim + 1) + d] = load_kv<K>(p.k_plane, at + d);
                v_s[j * head_dim + d] = load_kv<K>(p.v_plane, at + d);
            }
        }
    }
}

template <KvFormat K>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttentionParams p) {
    float* smem = tps_dynamic_shared<float>();
    const int64_t t = blockIdx.x, g = blockIdx.y, part = blockIdx.z;
    const int64_t D = p.head_dim;
    const int64_t G = p.heads / p.kv_heads;
    float* q_s = smem;
    float* k_s = q_s + G * D;
    float* v_s = k_s + kAttentionTile * (D + 1);
    float* p_s = v_s + kAttentionTile * D;
    float* m_s = p_s + G * kAttentionTile;
    float* l_s = m_s + G;
    float* a_s = l_s + G;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    const int64_t n_keys = static_cast<int64_t>(p.step.positions[t]) + 1;
    const int32_t* blocks = p.step.blocks + p.step.block_off[p.step.sequence[t]];
    const int64_t chunk = part_keys(n_keys, p.splits);
    const int64_t k0 = part * chunk;
    const int64_t k1 = std::min<int64_t>(n_keys, k0 + chunk);
    const float scale = rsqrtf(static_cast<float>(D));

    for (int64_t e = threadIdx.x; e < G * D; e += kThreads) {
        q_s[e] = p.q[t * p.heads * D + (g * G) * D + e] * scale;
    }
    for (int64_t h = threadIdx.x; h < G; h += kThreads) {
        m_s[h] = -INFINITY;
        l_s[h] = 0.0f;
    }
    float acc[kAccPerThread];
#pragma unroll
    for (int i = 0; i < kAccPerThread; ++i) acc[i] = 0.0f;

    for (int64_t kb = k0; kb < k1; kb += kAttentionTile) {
        const int64_t nk = std::min<int64_t>(kAttentionTile, k1 - kb);
        __syncthreads();  // the previous tile is consumed (and q, m, l are written)
        // positions are int32 (so kb and nk fit), head and block sizes fit 32 bits (attention_supported)
        load_tile<K>(p, blocks, static_cast<int>(kb), static_cast<int>(nk), g, k_s, v_s);
        __syncthreads();
        for (int64_t e = threadIdx.x; e < G * kAttentionTile; e += kThreads) {
            const int64_t h = e / kAttentionTile, j = e % kAttentionTile;
            float s = -INFINITY;
            if (j < nk) {
                s = 0.0f;
                const float* qh = q_s + h * D;
                const float* kj = k_s + j * (D + 1);
                for (int64_t d = 0; d < D; ++d) s += qh[d] * kj[d];
            }
            p_s[e] = s;
        }
        __syncthreads();
        for (int64_t h = warp; h < G; h += kThreads / 32) {
            const float s = p_s[h * kAttentionTile + lane];
            const float m_old = m_s[h];
            const float m_new = fmaxf(m_old, warp_max(s));
            const float e = lane < nk ? expf(s - m_new) : 0.0f;
            const float sum = warp_sum(e);
            p_s[h * kAttentionTile + lane] = e;
            if (lane == 0) {
                const float alpha = expf(m_old - m_new);  // 0 on the first tile
                a_s[h] = alpha;
                l_s[h] = l_s[h] * alpha + sum;
                m_s[h] = m_new;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kAccPerThread; ++i) {
            const int e = static_cast<int>(threadIdx.x) + i * kThreads;
            if (e < G * D) {
                const int h = e / static_cast<int>(D), d = e - h * static_cast<int>(D);
                float a = acc[i] * a_s[h];
                const float* ph = p_s + h * kAttentionTile;
                for (int64_t j = 0; j < nk; ++j) a += ph[j] * v_s[j * D + d];
                acc[i] = a;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kAccPerThread; ++i) {
        const int64_t e = threadIdx.x + int64_t{i} * kThreads;
        if (e < G * D) {
            const int64_t h = g * G + e / D, d = e % D;
            if (p.splits == 1) {
                p.out[t * p.heads * D + h * D + d] = acc[i] / l_s[e / D];
            } else {
                float* part_out = p.partial + ((t * p.heads + h) * p.splits + part) * (D + 2);
                part_out[d] = acc[i];
                if (d == 0) {
                    part_out[D] = m_s[e / D];  // -inf for a part past the sequence's end
                    part_out[D + 1] = l_s[e / D];
                }
            }
        }
    }
}

// One block per (token, head): the parts' accumulators rescaled to the largest max, summed, and
// divided by the rescaled sum. Only the parts that hold keys are read: the rest (max -inf, sum
// and accumulators 0) would add nothing, and a replayed decode step early in a long cache has
// most of its parts empty.
__global__ void attention_combine_kernel(AttentionParams p) {
    const int64_t t = blockIdx.x, h = blockIdx.y, D = p.head_dim;
    const float* parts = p.partial + (t * p.heads + h) * p.splits * (D + 2);
    const int64_t n_keys = static_cast<int64_t>(p.step.positions[t]) + 1;
    const int64_t used = std::min<int64_t>(p.splits, ceil_div(n_keys, part_keys(n_keys, p.splits)));
    float m = -INFINITY;
    for (int64_t s = 0; s < used; ++s) m = fmaxf(m, parts[s * (D + 2) + D]);
    float l = 0;
    for (int64_t s = 0; s < used; ++s) l += parts[s * (D + 2) + D + 1] * expf(parts[s * (D + 2) + D] - m);
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0;
        for (int64_t s = 0; s < used; ++s) a += parts[s * (D + 2) + d] * expf(parts[s * (D + 2) + D] - m);
        p.out[t * p.heads * D + h * D + d] = a / l;
    }
}

template <class Kernel>
void set_shared(Kernel kernel, size_t bytes) {
    TPS_CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <KvFormat K>
void launch_attention(const AttentionParams& p, dim3 grid, size_t shared, cudaStream_t stream) {
    set_shared(attention_kernel<K>, shared);
    launch_kernel(attention_kernel<K>, grid, kThreads, shared, stream, p);
}

}  // namespace

bool kv_store_supported(const KvStoreParams& p) { return p.stride > 0 && p.block_tokens > 0; }

void invoke_kv_store(const KvStoreParams& p, cudaStream_t stream) {
    if (p.step.tokens == 0) return;
    const dim3 grid(static_cast<unsigned>(p.step.tokens)), block(std::min<int64_t>(256, ceil_div(p.stride, 32) * 32));
    switch (p.format) {
        case KvFormat::f32: launch_kernel(kv_store_kernel<KvFormat::f32>, grid, block, 0, stream, p); break;
        case KvFormat::f16: launch_kernel(kv_store_kernel<KvFormat::f16>, grid, block, 0, stream, p); break;
        case KvFormat::bf16: launch_kernel(kv_store_kernel<KvFormat::bf16>, grid, block, 0, stream, p); break;
    }
    TPS_CHECK_LAUNCH("kv_store");
}

bool attention_supported(const AttentionParams& p) {
    if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0 || p.head_dim <= 0) return false;
    const int64_t group = p.heads / p.kv_heads;
    return group <= kAttentionMaxGroup && p.head_dim <= kAttentionMaxHeadDim &&
           attention_shared_bytes(group, p.head_dim) <= 96 * 1024 && p.splits >= 1 && p.splits <= 65535 &&
           (p.splits == 1 || p.partial != nullptr) && p.block_tokens > 0 && p.block_tokens <= INT32_MAX;
}

int64_t attention_split(int64_t tokens, int64_t kv_heads, int64_t max_keys, int multiprocessors) {
    // enough blocks to fill the card twice over, but no part shorter than 8 tiles
    const int64_t blocks = tokens * kv_heads;
    const int64_t want = ceil_div(2 * int64_t{multiprocessors}, std::max<int64_t>(1, blocks));
    const int64_t most = ceil_div(max_keys, 8 * kAttentionTile);
    return std::max<int64_t>(1, std::min(want, most));
}

int64_t attention_partial_floats(const AttentionParams& p) {
    return p.splits > 1 ? p.step.tokens * p.heads * p.splits * (p.head_dim + 2) : 0;
}

void invoke_attention(const AttentionParams& p, cudaStream_t stream) {
    if (p.step.tokens == 0) return;
    const int64_t group = p.heads / p.kv_heads;
    const size_t shared = attention_shared_bytes(group, p.head_dim);
    const dim3 grid(static_cast<unsigned>(p.step.tokens), static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(p.splits));
    switch (p.format) {
        case KvFormat::f32: launch_attention<KvFormat::f32>(p, grid, shared, stream); break;
        case KvFormat::f16: launch_attention<KvFormat::f16>(p, grid, shared, stream); break;
        case KvFormat::bf16: launch_attention<KvFormat::bf16>(p, grid, shared, stream); break;
    }
    TPS_CHECK_LAUNCH("attention");
    if (p.splits > 1) {
        const dim3 parts(static_cast<unsigned>(p.step.tokens), static_cast<unsigned>(p.heads));
        const auto threads = static_cast<unsigned>(std::min<int64_t>(256, ceil_div(p.head_dim, 32) * 32));
        launch_kernel(attention_combine_kernel, parts, threads, 0, stream, p);
        TPS_CHECK_LAUNCH("attention_combine");
    }
}

}  // namespace tps::cuda
