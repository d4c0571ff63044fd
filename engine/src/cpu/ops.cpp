// The CPU backend's element-wise and attention ops. They are a small share of a step next to the
// matmuls, so they are written plainly (the compiler vectorises the inner loops); what matters
// is that each computes in f32 the way transformers does, so results match its logits.
#include "ops.h"

#include "kernels.h"
#include "simd.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/numeric.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace tps::cpu {

void rmsnorm_row(const float* x, const float* w, int64_t n, float eps, float* out) {
    // as HF's LlamaRMSNorm in f32: x * rsqrt(mean(x^2) + eps) * w
    float ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

void rope_row(float* x, int64_t heads, int64_t head_dim, const RopeTable& t, int32_t pos, float* cos_buf,
              float* sin_buf) {
    const int64_t half = t.rotary_dims / 2;
    for (int64_t i = 0; i < half; ++i) {
        // angle in f32 as torch computes it (inv_freq[i] * position), then cos/sin of that float
        const float angle = t.inv_freq[static_cast<size_t>(i)] * static_cast<float>(pos);
        cos_buf[i] = std::cos(angle);
        sin_buf[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < heads; ++h) {
        float* v = x + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
            const int64_t a = t.adjacent_pairs ? 2 * i : i;
            const int64_t b = t.adjacent_pairs ? 2 * i + 1 : i + half;
            const float x1 = v[a];
            const float x2 = v[b];
            v[a] = x1 * cos_buf[i] - x2 * sin_buf[i];
            v[b] = x2 * cos_buf[i] + x1 * sin_buf[i];
        }
    }
}

namespace {
TPS_AVX2 int64_t swiglu_avx2(const float* gate, const float* up, int64_t n, float* out) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
        const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
    return i;
}
}  // namespace

void swiglu_row(const float* gate, const float* up, int64_t n, float* out) {
    const int64_t done = have_avx2() ? swiglu_avx2(gate, up, n, out) : 0;
    for (int64_t i = done; i < n; ++i) {
        const float g = gate[i];
        out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
}

namespace {

// KV elements: f32, or 16-bit halves / bfloat16s behind a tag type
struct Half {
    uint16_t bits;
};
struct Brain {
    uint16_t bits;
};
inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const Half* p, int64_t i) { return f16_to_f32(p[i].bits); }
inline float load(const Brain* p, int64_t i) { return bf16_to_f32(p[i].bits); }

template <class Elem>
void attend(const float* q, const Elem* k_base, const Elem* v_base, const KvLayout& L, const StepLayout::Sequence& s,
            int64_t kv_head, int32_t last_pos, float* out, float* scores) {
    const int64_t hd = L.head_dim;
    const int64_t stride = L.token_stride();
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    float m = -std::numeric_limits<float>::infinity();
    float l = 0;
    std::fill(out, out + hd, 0.0f);
    const int64_t n = last_pos + 1;
    for (int64_t start = 0; start < n; start += L.block_tokens) {
        const int64_t count = std::min(L.block_tokens, n - start);
        const int64_t block = s.blocks[start / L.block_tokens];
        const Elem* kb = k_base + (block * L.block_tokens) * stride + kv_head * hd;
        const Elem* vb = v_base + (block * L.block_tokens) * stride + kv_head * hd;
        float block_max = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < count; ++j) {
            float dot = 0;
            const Elem* kj = kb + j * stride;
            for (int64_t d = 0; d < hd; ++d) dot += q[d] * load(kj, d);
            scores[j] = dot * scale;
            block_max = std::max(block_max, scores[j]);
        }
        // online softmax: rescale what was accumulated when the running maximum grows
        const float m_new = std::max(m, block_max);
        const float correction = std::exp(m - m_new);
        l *= correction;
        for (int64_t d = 0; d < hd; ++d) out[d] *= correction;
        for (int64_t j = 0; j < count; ++j) {
            const float p = std::exp(scores[j] - m_new);
            l += p;
            const Elem* vj = vb + j * stride;
            for (int64_t d = 0; d < hd; ++d) out[d] += p * load(vj, d);
        }
        m = m_new;
    }
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < hd; ++d) out[d] *= inv;
}

}  // namespace

void attention_one(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                   const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores) {
    if (!attention_avx2(q, k_layer, v_layer, L, s, kv_head, last_pos, out, scores)) {
        attention_reference(q, k_layer, v_layer, L, s, kv_head, last_pos, out, scores);
    }
}

void attention_reference(const float* q, const void* k_layer, const void* v_layer, const KvLayout& L,
                         const StepLayout::Sequence& s, int64_t kv_head, int32_t last_pos, float* out, float* scores) {
    switch (L.dtype) {
        case DType::f32:
            return attend(q, static_cast<const float*>(k_layer), static_cast<const float*>(v_layer), L, s, kv_head,
                          last_pos, out, scores);
        case DType::f16:
            return attend(q, static_cast<const Half*>(k_layer), static_cast<const Half*>(v_layer), L, s, kv_head,
                          last_pos, out, scores);
        case DType::bf16:
            return attend(q, static_cast<const Brain*>(k_layer), static_cast<const Brain*>(v_layer), L, s, kv_head,
                          last_pos, out, scores);
        default:
            throw Error(fmt::format("attention: KV cache type {} is not supported on the CPU", dtype_name(L.dtype)));
    }
}

}  // namespace tps::cpu

namespace tps {

RopeTable make_rope_table(const RopeConfig& rope, int64_t head_dim, const Vec* freq_factors) {
    RopeTable t;
    t.rotary_dims = head_dim;
    t.adjacent_pairs = rope.adjacent_pairs;
    const int64_t half = head_dim / 2;
    t.inv_freq.resize(static_cast<size_t>(half));
    const float base = static_cast<float>(rope.theta);
    for (int64_t i = 0; i < half; ++i) {
        // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
        t.inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(base, exponent);
    }
    if (rope.scaling == "none") return t;
    if (rope.scaling == "linear") {
        for (auto& f : t.inv_freq) f /= static_cast<float>(rope.factor);
        return t;
    }
    TPS_CHECK_AS(InputError, rope.scaling == "llama3",
                 "rope scaling \"{}\" is not supported by the engine (none, linear, llama3 are)", rope.scaling);
    if (freq_factors && !freq_factors->empty()) {
        // GGUF: llama.cpp stored the per-frequency divisors (rope_freqs.weight)
        TPS_CHECK_AS(InputError, freq_factors->n == half, "rope_freqs.weight has {} entries for {} frequencies",
                     freq_factors->n, half);
        for (int64_t i = 0; i < half; ++i) t.inv_freq[static_cast<size_t>(i)] /= freq_factors->data()[i];
        return t;
    }
    // transformers' _compute_llama3_parameters
    const float factor = static_cast<float>(rope.factor);
    const float low = static_cast<float>(rope.low_freq_factor);
    const float high = static_cast<float>(rope.high_freq_factor);
    const float old_len = static_cast<float>(rope.original_max_position);
    const float low_wavelen = old_len / low;
    const float high_wavelen = old_len / high;
    constexpr float kPi = 3.14159265358979323846f;
    for (auto& f : t.inv_freq) {
        const float wavelen = 2 * kPi / f;
        float scaled = wavelen > low_wavelen ? f / factor : f;
        const float smooth = (old_len / wavelen - low) / (high - low);
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) scaled = (1 - smooth) * scaled / factor + smooth * scaled;
        f = scaled;
    }
    return t;
}

}  // namespace tps
