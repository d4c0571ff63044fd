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
    const int64_t stride = p.kv_heads * D;
    const float scale = rsqrtf(static_cast<float>(D));
    // positions are int32; head and block sizes fit 32 bits (attention_supported)
    const int head_dim = static_cast<int>(D), block_tokens = static_cast<int>(p.block_tokens);

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
        // a warp per key, its lanes along the head: the key's slot is found once, in 32-bit
        // arithmetic (64-bit division per element once cost more than the whole tile's math)
        for (int j = warp; j < nk; j += kThreads / 32) {
            const int pos = static_cast<int>(kb) + j;
            const int64_t slot = int64_t{blocks[pos / block_tokens]} * block_tokens + pos % block_tokens;
            const int64_t at = slot * stride + g * D;
            for (int d = lane; d < head_dim; d += 32) {
                k_s[j * (head_dim + 1) + d] = load_kv<K>(p.k_plane, at + d);
                v_s[j * head_dim + d] = load_kv<K>(p.v_plane, at + d);
            }
        }
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
                const int h = e / head_dim, d = e - h * head_dim;
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
        case KvFormat::f32:
            set_shared(attention_kernel<KvFormat::f32>, shared);
            launch_kernel(attention_kernel<KvFormat::f32>, grid, kThreads, shared, stream, p);
            break;
        case KvFormat::f16:
            set_shared(attention_kernel<KvFormat::f16>, shared);
            launch_kernel(attention_kernel<KvFormat::f16>, grid, kThreads, shared, stream, p);
            break;
        case KvFormat::bf16:
            set_shared(attention_kernel<KvFormat::bf16>, shared);
            launch_kernel(attention_kernel<KvFormat::bf16>, grid, kThreads, shared, stream, p);
            break;
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
