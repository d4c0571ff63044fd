// AVX2 building blocks of the CPU kernels: loading 8 weights of any stored format as f32 (the
// quantized formats are expanded block by block in registers, never a whole matrix), and
// horizontal sums. Every function is compiled for AVX2+FMA+F16C with target attributes and only
// called after a run-time CPU check; kernels.h has the scalar reference.
#pragma once

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

}  // namespace tps::cpu
