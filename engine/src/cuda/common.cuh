// Device helpers the CUDA kernels share (.cu files only): element loads of every weight and KV
// format, warp and block reductions. The GGML block layouts are those of
// engine/src/weights/ggml_blocks.cpp, whose bit-field helpers (ggml_blocks.h) the kernels share.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "formats.h"

#include "../weights/ggml_blocks.h"

#include <cstdint>

namespace tps::cuda {

// Launches `kernel` over grid x block threads, with `smem` bytes of dynamic shared memory, on
// `stream`: `<<<>>>` under nvcc, the host emulator's launch in an emulated build (emu/README.md).
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   const Args&... args) {
#if defined(TPS_CUDA_EMULATED)
    ::tpsemu::launch(reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                     [=] { kernel(static_cast<Params>(args)...); });
#else
    kernel<<<grid, block, smem, stream>>>(args...);
#endif
}

template <WFormat F>
struct FormatTag {
    static constexpr WFormat value = F;
};

// fn(FormatTag<F>{}) for the weight format f: how a launcher instantiates its kernel per format.
template <class Fn>
void with_format(WFormat f, Fn&& fn) {
    switch (f) {
        case WFormat::f32: fn(FormatTag<WFormat::f32>{}); return;
        case WFormat::f16: fn(FormatTag<WFormat::f16>{}); return;
        case WFormat::bf16: fn(FormatTag<WFormat::bf16>{}); return;
        case WFormat::int8: fn(FormatTag<WFormat::int8>{}); return;
        case WFormat::q8_0: fn(FormatTag<WFormat::q8_0>{}); return;
        case WFormat::q4_0: fn(FormatTag<WFormat::q4_0>{}); return;
        case WFormat::q4_1: fn(FormatTag<WFormat::q4_1>{}); return;
        case WFormat::q5_0: fn(FormatTag<WFormat::q5_0>{}); return;
        case WFormat::q5_1: fn(FormatTag<WFormat::q5_1>{}); return;
        case WFormat::iq4_nl: fn(FormatTag<WFormat::iq4_nl>{}); return;
        case WFormat::q2_k: fn(FormatTag<WFormat::q2_k>{}); return;
        case WFormat::q3_k: fn(FormatTag<WFormat::q3_k>{}); return;
        case WFormat::q4_k: fn(FormatTag<WFormat::q4_k>{}); return;
        case WFormat::q5_k: fn(FormatTag<WFormat::q5_k>{}); return;
        case WFormat::q6_k: fn(FormatTag<WFormat::q6_k>{}); return;
        case WFormat::iq4_xs: fn(FormatTag<WFormat::iq4_xs>{}); return;
    }
}

// Whether every row of w starts at a multiple of `bytes`.
inline bool rows_aligned(const WeightRows& w, int64_t bytes) {
    return reinterpret_cast<uintptr_t>(w.data) % static_cast<uintptr_t>(bytes) == 0 && w.row_bytes % bytes == 0;
}

// A block's dynamic shared memory as T (what `extern __shared__ T name[]` declares).
#if !defined(TPS_CUDA_EMULATED)
template <class T>
__device__ __forceinline__ T* tps_dynamic_shared() {
    extern __shared__ __align__(16) unsigned char tps_dynamic_smem[];
    return reinterpret_cast<T*>(tps_dynamic_smem);
}
#endif

__device__ __forceinline__ float half_bits_to_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) {
    return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));
}

// A little-endian 16- or 32-bit field at p, read as wide as the alignment A (4, 2 or 1 bytes)
// that p is known to have allows.
template <int A>
__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) {
    if constexpr (A >= 2) {
        return __ldg(reinterpret_cast<const uint16_t*>(p));
    } else {
        return load_u16(p);
    }
}
template <int A>
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) {
    if constexpr (A >= 4) {
        return __ldg(reinterpret_cast<const uint32_t*>(p));
    } else {
        return ld_u16<A>(p) | (ld_u16<A>(p + 2) << 16);
    }
}

// Quarter q (0..3) of the 32-element chunk c of a row in block format F: 8 weights, f[0..3] the
// chunk's elements at[0]..at[0]+3 and f[4..7] its elements at[1]..at[1]+3. A chunk is a block
// of the 32-element formats and an eighth of a super-block of the 256-element ones (sub-block s).
// A: the alignment of the row's start, block_align(F) or 1 (byte loads). Values as
// engine/src/weights/ggml_blocks.cpp's decoders compute them, in the same order of operations.
template <WFormat F, int A>
__device__ __forceinline__ void dequant_quarter(const uint8_t* row, int64_t c, int q, float* f, int* at) {
    constexpr int kChunks = static_cast<int>(block_elems(F) / 32);
    constexpr int64_t kBytes = block_bytes(F);
    const uint8_t* blk = row + (c / kChunks) * kBytes;
    const int s = static_cast<int>(c % kChunks);
    if constexpr (F == WFormat::q8_0) {
        const float d = half_bits_to_f32(static_cast<uint16_t>(ld_u16<A>(blk)));
        const uint32_t lo = ld_u32<A>(blk + 2 + 8 * q), hi = ld_u32<A>(blk + 6 + 8 * q);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            f[j] = d * static_cast<float>(static_cast<int8_t>(lo >> (8 * j)));
            f[4 + j] = d * static_cast<float>(static_cast<int8_t>(hi >> (8 * j)));
        }
        at[0] = 8 * q;
        at[1] = 8 * q + 4;
    } else if constexpr (F == WFormat::q4_0 || F == WFormat::q4_1 || F == WFormat::q5_0 || F == WFormat::q5_1 ||
                         F == WFormat::iq4_nl || F == WFormat::iq4_xs) {
        // 16 bytes of nibbles: byte j holds element j (low) and element 16 + j (high); q5's fifth
        // bit of element j is bit j of qh
        float d, m = 0.0f;
        uint32_t qh = 0;
        const uint8_t* nibbles;
        if constexpr (F == WFormat::q4_1 || F == WFormat::q5_1) {
            const uint32_t dm = ld_u32<A>(blk);
            d = half_bits_to_f32(static_cast<uint16_t>(dm & 0xffffu));
            m = half_bits_to_f32(static_cast<uint16_t>(dm >> 16));
        } else {
            d = half_bits_to_f32(static_cast<uint16_t>(ld_u16<A>(blk)));
        }
        if constexpr (F == WFormat::q5_0) qh = ld_u32<A>(blk + 2);
        if constexpr (F == WFormat::q5_1) qh = ld_u32<A>(blk + 4);
        if constexpr (F == WFormat::iq4_xs) {
            d *= static_cast<float>(ggml::iq4xs_scale(s, static_cast<uint16_t>(ld_u16<A>(blk + 2)), blk + 4));
            nibbles = blk + 8 + 16 * s;
        } else {
            constexpr int kAt = F == WFormat::q4_1 ? 4 : F == WFormat::q5_0 ? 6 : F == WFormat::q5_1 ? 8 : 2;
            nibbles = blk + kAt;
        }
        const uint32_t bytes = ld_u32<A>(nibbles + 4 * q);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            int lo = static_cast<int>((bytes >> (8 * j)) & 0x0Fu), hi = static_cast<int>((bytes >> (8 * j + 4)) & 0x0Fu);
            if constexpr (F == WFormat::q5_0 || F == WFormat::q5_1) {
                lo |= static_cast<int>((qh >> (4 * q + j)) & 1u) << 4;
                hi |= static_cast<int>((qh >> (4 * q + j + 16)) & 1u) << 4;
            }
            if constexpr (F == WFormat::q4_0) {
                f[j] = d * static_cast<float>(lo - 8);
                f[4 + j] = d * static_cast<float>(hi - 8);
            } else if constexpr (F == WFormat::q5_0) {
                f[j] = d * static_cast<float>(lo - 16);
                f[4 + j] = d * static_cast<float>(hi - 16);
            } else if constexpr (F == WFormat::q4_1 || F == WFormat::q5_1) {
                f[j] = d * static_cast<float>(lo) + m;
                f[4 + j] = d * static_cast<float>(hi) + m;
            } else {
                f[j] = d * static_cast<float>(ggml::iq4_value(lo));
                f[4 + j] = d * static_cast<float>(ggml::iq4_value(hi));
            }
        }
        at[0] = 4 * q;
        at[1] = 16 + 4 * q;
    } else {
        // the K-quants: elements 8q .. 8q + 7 of the chunk, contiguous; a scale (and a min) per
        // sub-block of 32 (q4_k, q5_k) or of 16 (q2_k, q3_k, q6_k: sub-block 2s + q / 2)
        const int n = s / 4, g = s % 4;  // the chunk's 128-element half, and its place in it
        float dl, ml = 0.0f;             // element = dl * level - ml
        uint32_t lv[2], hv[2] = {0, 0};  // the bytes holding each element's low and high bits
        int low_shift, high_shift, high_at, offset = 0;
        if constexpr (F == WFormat::q2_k) {
            const uint32_t dm = ld_u32<A>(blk + 80);
            const int sc = blk[2 * s + q / 2];
            dl = half_bits_to_f32(static_cast<uint16_t>(dm & 0xffffu)) * static_cast<float>(sc & 0xF);
            ml = half_bits_to_f32(static_cast<uint16_t>(dm >> 16)) * static_cast<float>(sc >> 4);
            const uint8_t* qs = blk + 16 + 32 * n + 8 * q;
            lv[0] = ld_u32<A>(qs), lv[1] = ld_u32<A>(qs + 4);
            low_shift = 2 * g, high_shift = 0, high_at = 2;
        } else if constexpr (F == WFormat::q3_k) {
            dl = half_bits_to_f32(static_cast<uint16_t>(ld_u16<A>(blk + 108))) *
                 static_cast<float>(ggml::q3k_scale(2 * s + q / 2, blk + 96));
            const uint8_t* qs = blk + 32 + 32 * n + 8 * q;
            lv[0] = ld_u32<A>(qs), lv[1] = ld_u32<A>(qs + 4);
            hv[0] = ld_u32<A>(blk + 8 * q), hv[1] = ld_u32<A>(blk + 8 * q + 4);
            low_shift = 2 * g, high_shift = 4 * n + g, high_at = 2, offset = 4;
        } else if constexpr (F == WFormat::q4_k || F == WFormat::q5_k) {
            const uint32_t dm = ld_u32<A>(blk);
            int sc, mn;
            ggml::k4_scale_min(s, blk + 4, sc, mn);
            dl = half_bits_to_f32(static_cast<uint16_t>(dm & 0xffffu)) * static_cast<float>(sc);
            ml = half_bits_to_f32(static_cast<uint16_t>(dm >> 16)) * static_cast<float>(mn);
            const uint8_t* qs = blk + (F == WFormat::q5_k ? 48 : 16) + 32 * (s / 2) + 8 * q;
            lv[0] = ld_u32<A>(qs), lv[1] = ld_u32<A>(qs + 4);
            if constexpr (F == WFormat::q5_k) hv[0] = ld_u32<A>(blk + 16 + 8 * q), hv[1] = ld_u32<A>(blk + 20 + 8 * q);
            low_shift = 4 * (s & 1), high_shift = s, high_at = 4;
        } else {
            static_assert(F == WFormat::q6_k, "a block format without a decoder");
            dl = half_bits_to_f32(static_cast<uint16_t>(ld_u16<A>(blk + 208))) *
                 static_cast<float>(static_cast<int8_t>(blk[192 + 2 * s + q / 2]));
            const uint8_t* ql = blk + 64 * n + 32 * (g & 1) + 8 * q;
            const uint8_t* qh = blk + 128 + 32 * n + 8 * q;
            lv[0] = ld_u32<A>(ql), lv[1] = ld_u32<A>(ql + 4);
            hv[0] = ld_u32<A>(qh), hv[1] = ld_u32<A>(qh + 4);
            low_shift = 4 * (g >> 1), high_shift = 2 * g, high_at = 4, offset = 32;
        }
        constexpr uint32_t kLowMask = F == WFormat::q2_k || F == WFormat::q3_k ? 3u : 0xFu;
        constexpr uint32_t kHighMask = F == WFormat::q6_k ? 3u : 1u;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const uint32_t byte_lo = lv[j / 4] >> (8 * (j % 4)), byte_hi = hv[j / 4] >> (8 * (j % 4));
            const int level = static_cast<int>(((byte_lo >> low_shift) & kLowMask) |
                                               (((byte_hi >> high_shift) & kHighMask) << high_at)) -
                              offset;
            f[j] = dl * static_cast<float>(level) - ml;
        }
        at[0] = 8 * q;
        at[1] = 8 * q + 4;
    }
}

// The 32 elements of chunk c of a row, to f32 (block formats only).
template <WFormat F, int A>
__device__ __forceinline__ void dequant_chunk(const uint8_t* row, int64_t c, float* out) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        float f[8];
        int at[2];
        dequant_quarter<F, A>(row, c, q, f, at);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            out[at[0] + j] = f[j];
            out[at[1] + j] = f[4 + j];
        }
    }
}

// Element i of a row of a plain format (int8: the stored integer; row_scale applies the scale).
template <WFormat F>
__device__ __forceinline__ float load_elem(const uint8_t* row, int64_t i) {
    if constexpr (F == WFormat::int8) {
        return static_cast<float>(reinterpret_cast<const int8_t*>(row)[i]);
    } else if constexpr (F == WFormat::f32) {
        return reinterpret_cast<const float*>(row)[i];
    } else if constexpr (F == WFormat::f16) {
        return half_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
    } else {
        return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
    }
}

// Row r's scale: int8's f16 scale, 1 for every other format.
template <WFormat F>
__device__ __forceinline__ float row_scale(const WeightRows& w, int64_t r) {
    if constexpr (F == WFormat::int8) {
        return half_bits_to_f32(load_u16(w.scales + 2 * r));
    } else {
        return 1.0f;
    }
}

template <KvFormat K>
__device__ __forceinline__ float load_kv(const void* base, int64_t i) {
    if constexpr (K == KvFormat::f32) {
        return static_cast<const float*>(base)[i];
    } else if constexpr (K == KvFormat::f16) {
        return __half2float(static_cast<const __half*>(base)[i]);
    } else {
        return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    }
}

// 16 bytes of 16-bit values as 8 floats
__device__ __forceinline__ void bf16x8(uint4 v, float* f) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        f[2 * i] = __uint_as_float(u[i] << 16);
        f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
    }
}

__device__ __forceinline__ void f16x8(uint4 v, float* f) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&u[i]));
        f[2 * i] = p.x;
        f[2 * i + 1] = p.y;
    }
}

// KV entries in 16 bytes; the 16 bytes from entry i (a multiple of it, in a plane that starts
// 16-byte aligned), and those bytes as floats: one load where load_kv makes 4 or 8
template <KvFormat K>
constexpr int kv_per_16() {
    return K == KvFormat::f32 ? 4 : 8;
}

template <KvFormat K>
__device__ __forceinline__ uint4 load_kv16(const void* base, int64_t i) {
    constexpr int64_t bytes = 16 / kv_per_16<K>();
    return __ldg(reinterpret_cast<const uint4*>(static_cast<const uint8_t*>(base) + i * bytes));
}

template <KvFormat K>
__device__ __forceinline__ void unpack_kv16(uint4 v, float* f) {
    if constexpr (K == KvFormat::f32) {
        f[0] = __uint_as_float(v.x);
        f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z);
        f[3] = __uint_as_float(v.w);
    } else if constexpr (K == KvFormat::f16) {
        f16x8(v, f);
    } else {
        bf16x8(v, f);
    }
}

template <KvFormat K>
__device__ __forceinline__ void store_kv(void* base, int64_t i, float v) {
    if constexpr (K == KvFormat::f32) {
        static_cast<float*>(base)[i] = v;
    } else if constexpr (K == KvFormat::f16) {
        static_cast<__half*>(base)[i] = __float2half_rn(v);
    } else {
        static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v);
    }
}

// The whole warp's sum and maximum, every lane getting it. (The host emulator runs the five
// shuffles as one collective with the same float operations: emu/include/cuda_runtime.h.)
__device__ __forceinline__ float warp_sum(float v) {
#if defined(TPS_CUDA_EMULATED)
    return ::tpsemu::from_bits<float>(
        ::tpsemu::warp_collective(0xffffffffu, ::tpsemu::WarpOp::butterfly_sum, ::tpsemu::to_bits(v), 0));
#else
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
#endif
}

__device__ __forceinline__ float warp_max(float v) {
#if defined(TPS_CUDA_EMULATED)
    return ::tpsemu::from_bits<float>(
        ::tpsemu::warp_collective(0xffffffffu, ::tpsemu::WarpOp::butterfly_max, ::tpsemu::to_bits(v), 0));
#else
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
#endif
}

// The sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = warp_sum(v);
    __syncthreads();  // partial may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = static_cast<int>(blockDim.x) / 32;
    v = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}

}  // namespace tps::cuda
