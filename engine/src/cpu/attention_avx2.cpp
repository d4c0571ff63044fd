// Decode and prefill attention with AVX2: the query-key dots and the value sums run 8 lanes at a
// time over the head dimension, block by block (16 cached tokens) with an online softmax, for
// f32, f16 and bf16 KV entries. The scalar version in ops.cpp is its reference.
#include "kernels.h"
#include "ops.h"
#include "simd.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tps::cpu {
namespace {

constexpr int64_t kMaxLanes = 32;  // head_dim up to 256

template <DType T>
TPS_AVX2 void attend(const float* q, const std::byte* k_base, const std::byte* v_base, const KvLayout& L,
                     const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores) {
    const int64_t hd = L.head_dim;
    const int64_t lanes = hd / 8;
    const int64_t elem = T == DType::f32 ? 4 : 2;
    const int64_t stride = L.token_stride() * elem;  // bytes from one cached token to the next
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    __m256 acc[kMaxLanes];
    for (int64_t v = 0; v < lanes; ++v) acc[v] = _mm256_setzero_ps();
    float m = -std::numeric_limits<float>::infinity();
    float l = 0;
    const int64_t n = last_pos + 1;
    for (int64_t start = 0; start < n; start += L.block_tokens) {
        const int64_t count = std::min(L.block_tokens, n - start);
        const int64_t block = s.blocks[start / L.block_tokens];
        const std::byte* kb = k_base + block * L.block_tokens * stride + kv_head * hd * elem;
        const std::byte* vb = v_base + block * L.block_tokens * stride + kv_head * hd * elem;
        float block_max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < count; ++j) {
            const std::byte* kj = kb + j * stride;
            __m256 d0 = _mm256_setzero_ps();
            __m256 d1 = _mm256_setzero_ps();
            int64_t v = 0;
            for (; v + 2 <= lanes; v += 2) {
                d0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * v), Load8<T>::at(kj, 8 * v), d0);
                d1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * v + 8), Load8<T>::at(kj, 8 * v + 8), d1);
            }
            if (v < lanes) d0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * v), Load8<T>::at(kj, 8 * v), d0);
            scores[j] = hsum(_mm256_add_ps(d0, d1)) * scale;
            block_max = std::max(block_max, scores[j]);
        }
        // online softmax: rescale what was accumulated when the running maximum grows
        const float m_new = std::max(m, block_max);
        const __m256 correction = _mm256_set1_ps(std::exp(m - m_new));
        l *= std::exp(m - m_new);
        for (int64_t v = 0; v < lanes; ++v) acc[v] = _mm256_mul_ps(acc[v], correction);
        // the block's probabilities, 8 at a time (scores past `count` are never read back)
        for (int64_t j = count; j < (count + 7) / 8 * 8; ++j) scores[j] = m_new;
        for (int64_t j = 0; j < count; j += 8) {
            _mm256_storeu_ps(scores + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + j), _mm256_set1_ps(m_new))));
        }
        for (int64_t j = 0; j < count; ++j) {
            const float p = scores[j];
            l += p;
            const __m256 pv = _mm256_set1_ps(p);
            const std::byte* vj = vb + j * stride;
            for (int64_t v = 0; v < lanes; ++v) acc[v] = _mm256_fmadd_ps(pv, Load8<T>::at(vj, 8 * v), acc[v]);
        }
        m = m_new;
    }
    const __m256 inv = _mm256_set1_ps(1.0f / l);
    for (int64_t v = 0; v < lanes; ++v) _mm256_storeu_ps(out + 8 * v, _mm256_mul_ps(acc[v], inv));
}

}  // namespace

bool attention_avx2(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                    const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores) {
    if (!have_avx2() || L.head_dim % 8 != 0 || L.head_dim / 8 > kMaxLanes) return false;
    const auto* k = static_cast<const std::byte*>(k_layer);
    const auto* v = static_cast<const std::byte*>(v_layer);
    switch (L.dtype) {
        case DType::f32: attend<DType::f32>(q, k, v, L, s, kv_head, last_pos, out, scores); return true;
        case DType::f16: attend<DType::f16>(q, k, v, L, s, kv_head, last_pos, out, scores); return true;
        case DType::bf16: attend<DType::bf16>(q, k, v, L, s, kv_head, last_pos, out, scores); return true;
        default: return false;
    }
}

}  // namespace tps::cpu
