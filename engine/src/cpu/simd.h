// AVX2 building blocks of the CPU kernels: loading 8 or 16 weights of any stored format as f32 (the
// quantized formats are expanded block by block in registers, never a whole matrix), and
// horizontal sums. Every function is compiled for AVX2+FMA+F16C with target attributes and only
// called after a run-time CPU check; kernels.h has the scalar reference.
#pragma once

#include "../weights/ggml_blocks.h"

#include "tpserve/partition/dtype.h"

#include <cstddef>
#include <cstdint>
#include <immintrin.h>

#define TPS_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace tps::cpu {

TPS_AVX2 inline float hsum(__m256 v) {
    const __m128 lo = _mm256_castps256_ps128(v);
    const __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// exp of 8 floats, Cephes' single-precision expf (range reduction by ln 2 split in two parts,
// a degree-6 polynomial): within 2 ulp of the correctly rounded value for x in [-87, 88]; below
// that it returns about 4e-39 (nothing a softmax or SiLU can tell from 0).
TPS_AVX2 inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f)), _mm256_set1_ps(88.3762626647949f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, z, x), _mm256_set1_ps(1.0f));
    const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

TPS_AVX2 inline float half_to_float(const std::byte* p) {
    uint16_t h;
    __builtin_memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// Eight consecutive weights starting at element k (a multiple of 8) of a stored row, as f32.
template <DType T>
struct Load8;

template <>
struct Load8<DType::f32> {
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
    }
};

template <>
struct Load8<DType::f16> {
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
    }
};

template <>
struct Load8<DType::bf16> {
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
    }
};

template <>
struct Load8<DType::int8> {  // the stored integers: the row's scale is applied to the finished dot
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + k));
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    }
};

template <>
struct Load8<DType::q8_0> {  // {f16 d; int8 q[32]}
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        const std::byte* blk = row + (k >> 5) * 34;
        const __m256 d = _mm256_set1_ps(half_to_float(blk));
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (k & 31)));
        return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
};

// Nibbles of q4 blocks: element j < 16 is the low nibble of byte j, j >= 16 the high nibble of
// byte j - 16.
TPS_AVX2 inline __m256 q4_nibbles(const std::byte* qs, int64_t j) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + (j & 15)));
    if (j >= 16) b = _mm_srli_epi16(b, 4);
    b = _mm_and_si128(b, _mm_set1_epi8(0x0F));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}

template <>
struct Load8<DType::q4_0> {  // {f16 d; u8 q[16]}: (nibble - 8) * d
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        const std::byte* blk = row + (k >> 5) * 18;
        const __m256 d = _mm256_set1_ps(half_to_float(blk));
        const __m256 v = _mm256_sub_ps(q4_nibbles(blk + 2, k & 31), _mm256_set1_ps(8.0f));
        return _mm256_mul_ps(d, v);
    }
};

template <>
struct Load8<DType::q4_1> {  // {f16 d; f16 m; u8 q[16]}: nibble * d + m
    TPS_AVX2 static __m256 at(const std::byte* row, int64_t k) {
        const std::byte* blk = row + (k >> 5) * 20;
        const __m256 d = _mm256_set1_ps(half_to_float(blk));
        const __m256 m = _mm256_set1_ps(half_to_float(blk + 2));
        return _mm256_fmadd_ps(q4_nibbles(blk + 4, k & 31), d, m);
    }
};

// Sixteen consecutive weights from element k (a multiple of 16) as two vectors: Load8 twice for
// the formats above. The others (q5_0, q5_1, the K-quants, the iq4s) have only this load:
// sixteen weights never straddle their (sub-)blocks, whose scale (and min) is decoded once, and
// the quants are unpacked 16 bytes at a time (their rows are whole 32-element blocks, so no
// 8-weight tail is ever read). w0 holds elements k..k+7 and w1 k+8..k+15.
template <DType T>
struct Load16 {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        w0 = Load8<T>::at(row, k);
        w1 = Load8<T>::at(row, k + 8);
    }
};

// Sixteen bytes from p, each shifted right by `shift` and masked.
TPS_AVX2 inline __m128i bits16(const uint8_t* p, int shift, int mask) {
    const __m128i b = _mm_srl_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), _mm_cvtsi32_si128(shift));
    return _mm_and_si128(b, _mm_set1_epi8(static_cast<char>(mask)));
}

// The 16 bytes of q as signed 8-bit values, as two vectors of 8 floats.
TPS_AVX2 inline void widen16(__m128i q, __m256& lo, __m256& hi) {
    lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
}

// q5_0 / q5_1: sixteen nibbles and their fifth bits (bits j..j+15 of qh, spread to one byte each).
template <bool WithMin>
TPS_AVX2 inline void q5_16(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
    const std::byte* blk = row + (k >> 5) * (WithMin ? 24 : 22);
    const std::byte* rest = blk + (WithMin ? 4 : 2);
    uint32_t qh;
    __builtin_memcpy(&qh, rest, 4);
    const int j = static_cast<int>(k & 31);  // 0 or 16
    const __m128i q = bits16(reinterpret_cast<const uint8_t*>(rest + 4), j == 0 ? 0 : 4, 0xF);
    __m128i h = _mm_set1_epi16(static_cast<short>((qh >> j) & 0xFFFF));
    h = _mm_shuffle_epi8(h, _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    const __m128i bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    h = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bit), bit), _mm_set1_epi8(16));
    const __m256 d = _mm256_set1_ps(half_to_float(blk));
    if constexpr (WithMin) {
        widen16(_mm_or_si128(q, h), w0, w1);  // (0..31)
        const __m256 m = _mm256_set1_ps(half_to_float(blk + 2));
        w0 = _mm256_fmadd_ps(w0, d, m);
        w1 = _mm256_fmadd_ps(w1, d, m);
    } else {
        widen16(_mm_sub_epi8(_mm_or_si128(q, h), _mm_set1_epi8(16)), w0, w1);
        w0 = _mm256_mul_ps(d, w0);
        w1 = _mm256_mul_ps(d, w1);
    }
}

template <>
struct Load16<DType::q5_0> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) { q5_16<false>(row, k, w0, w1); }
};

template <>
struct Load16<DType::q5_1> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) { q5_16<true>(row, k, w0, w1); }
};

// iq4_nl / iq4_xs: nibbles looked up in kIq4Values, 16 at a time by one byte shuffle.
TPS_AVX2 inline __m128i iq4_lookup(__m128i nibbles) {
    return _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ggml::kIq4Values)), nibbles);
}

// iq4_xs: sub-block s's scale times d.
TPS_AVX2 inline float iq4xs_d(const std::byte* blk, int s) {
    uint16_t scales_h;
    __builtin_memcpy(&scales_h, blk + 2, 2);
    return half_to_float(blk) * static_cast<float>(ggml::iq4xs_scale(s, scales_h, reinterpret_cast<const uint8_t*>(blk + 4)));
}

// iq4: the 16 nibbles of a block's half (j 0: low, 16: high), looked up and scaled by d.
TPS_AVX2 inline void iq4_16(const std::byte* qs, int64_t j, float d, __m256& w0, __m256& w1) {
    widen16(iq4_lookup(bits16(reinterpret_cast<const uint8_t*>(qs), j == 0 ? 0 : 4, 0xF)), w0, w1);
    const __m256 dv = _mm256_set1_ps(d);
    w0 = _mm256_mul_ps(dv, w0);
    w1 = _mm256_mul_ps(dv, w1);
}

template <>
struct Load16<DType::iq4_nl> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        const std::byte* blk = row + (k >> 5) * 18;
        iq4_16(blk + 2, k & 31, half_to_float(blk), w0, w1);
    }
};

template <>
struct Load16<DType::iq4_xs> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        const std::byte* blk = row + (k >> 8) * 136;
        const int i = static_cast<int>(k & 255), s = i >> 5;
        iq4_16(blk + 8 + 16 * s, i & 31, iq4xs_d(blk, s), w0, w1);
    }
};

template <>
struct Load16<DType::q2_k> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        const std::byte* blk = row + (k >> 8) * 84;
        const int i = static_cast<int>(k & 255), n = i >> 7, g = (i >> 5) & 3, l = i & 31;
        const auto* b = reinterpret_cast<const uint8_t*>(blk);
        const int sc = b[i >> 4];
        const __m256 d = _mm256_set1_ps(half_to_float(blk + 80) * static_cast<float>(sc & 0xF));
        const __m256 m = _mm256_set1_ps(half_to_float(blk + 82) * static_cast<float>(sc >> 4));
        widen16(bits16(b + 16 + 32 * n + l, 2 * g, 3), w0, w1);
        w0 = _mm256_fmsub_ps(w0, d, m);
        w1 = _mm256_fmsub_ps(w1, d, m);
    }
};

template <>
struct Load16<DType::q3_k> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        const std::byte* blk = row + (k >> 8) * 110;
        const int i = static_cast<int>(k & 255), n = i >> 7, g = (i >> 5) & 3, l = i & 31;
        const auto* b = reinterpret_cast<const uint8_t*>(blk);
        const __m128i low = bits16(b + 32 + 32 * n + l, 2 * g, 3);
        const __m128i high = _mm_slli_epi16(bits16(b + l, 4 * n + g, 1), 2);
        widen16(_mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(4)), w0, w1);
        const __m256 d = _mm256_set1_ps(half_to_float(blk + 108) * static_cast<float>(ggml::q3k_scale(i >> 4, b + 96)));
        w0 = _mm256_mul_ps(d, w0);
        w1 = _mm256_mul_ps(d, w1);
    }
};

template <bool Five>
TPS_AVX2 inline void q45k_16(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
    const std::byte* blk = row + (k >> 8) * (Five ? 176 : 144);
    const int i = static_cast<int>(k & 255), s = i >> 5, l = i & 31;
    const auto* b = reinterpret_cast<const uint8_t*>(blk);
    int sc, mn;
    ggml::k4_scale_min(s, b + 4, sc, mn);
    __m128i q = bits16(b + (Five ? 48 : 16) + 32 * (s >> 1) + l, 4 * (s & 1), 0xF);
    if constexpr (Five) q = _mm_or_si128(q, _mm_slli_epi16(bits16(b + 16 + l, s, 1), 4));
    widen16(q, w0, w1);  // (0..31: the same as unsigned)
    const __m256 d = _mm256_set1_ps(half_to_float(blk) * static_cast<float>(sc));
    const __m256 m = _mm256_set1_ps(half_to_float(blk + 2) * static_cast<float>(mn));
    w0 = _mm256_fmsub_ps(w0, d, m);
    w1 = _mm256_fmsub_ps(w1, d, m);
}

template <>
struct Load16<DType::q4_k> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) { q45k_16<false>(row, k, w0, w1); }
};

template <>
struct Load16<DType::q5_k> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) { q45k_16<true>(row, k, w0, w1); }
};

template <>
struct Load16<DType::q6_k> {
    TPS_AVX2 static void at(const std::byte* row, int64_t k, __m256& w0, __m256& w1) {
        const std::byte* blk = row + (k >> 8) * 210;
        const int i = static_cast<int>(k & 255), n = i >> 7, g = (i >> 5) & 3, l = i & 31;
        const auto* b = reinterpret_cast<const uint8_t*>(blk);
        const __m128i low = bits16(b + 64 * n + 32 * (g & 1) + l, 4 * (g >> 1), 0xF);
        const __m128i high = _mm_slli_epi16(bits16(b + 128 + 32 * n + l, 2 * g, 3), 4);
        widen16(_mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32)), w0, w1);
        const __m256 d = _mm256_set1_ps(half_to_float(blk + 208) * static_cast<float>(reinterpret_cast<const int8_t*>(b + 192)[i >> 4]));
        w0 = _mm256_mul_ps(d, w0);
        w1 = _mm256_mul_ps(d, w1);
    }
};

}  // namespace tps::cpu
