// Device helpers the CUDA kernels share (.cu files only): element loads of every weight and KV
// format, warp and block reductions. Formats as in engine/src/weights/convert.cpp (GGML blocks of
// 32: q8_0 = {f16 d; int8 q[32]}, q4_0 = {f16 d; u8 q[16]}, q4_1 = {f16 d; f16 m; u8 q[16]}).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "formats.h"

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

// Bytes of one GGML block of 32 elements.
template <WFormat F>
constexpr int block_bytes() {
    return F == WFormat::q8_0 ? 34 : F == WFormat::q4_0 ? 18 : F == WFormat::q4_1 ? 20 : 0;
}

// The 32 elements of block `b` of a row, to f32 (block formats only).
template <WFormat F>
__device__ __forceinline__ void dequant_block(const uint8_t* row, int64_t b, float* out) {
    const uint8_t* blk = row + b * block_bytes<F>();
    if constexpr (F == WFormat::q8_0) {
        const float d = half_bits_to_f32(load_u16(blk));
        const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
#pragma unroll
        for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(q[j]);
    } else if constexpr (F == WFormat::q4_0) {
        const float d = half_bits_to_f32(load_u16(blk));
        const uint8_t* q = blk + 2;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            out[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
            out[16 + j] = d * static_cast<float>((q[j] >> 4) - 8);
        }
    } else if constexpr (F == WFormat::q4_1) {
        const float d = half_bits_to_f32(load_u16(blk));
        const float m = half_bits_to_f32(load_u16(blk + 2));
        const uint8_t* q = blk + 4;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            out[j] = d * static_cast<float>(q[j] & 0x0F) + m;
            out[16 + j] = d * static_cast<float>(q[j] >> 4) + m;
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
