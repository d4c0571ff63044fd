// Each warp owns one weight row and walks it in 16-byte pieces (8 halves, 4 floats or 16 int8
// per lane), or for GGML formats in quarters of 32-element chunks (8 weights per lane, 8 chunks
// per warp step: 8 blocks of 32 or one super-block of 256), so a warp's loads cover contiguous
// bytes. int8 sums integers times x and scales the row's finished sum. x is re-read from L1/L2
// by every row's warp; weights stream from DRAM once, which is what sets decode speed.
#include "common.cuh"
#include "cuda_check.h"
#include "gemv.cuh"

#include <algorithm>

namespace tps::cuda {
namespace {

constexpr int kWarps = 4;  // rows per block

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

// 8 weights at element `at` of every token's x, accumulated
template <int T>
__device__ __forceinline__ void dot8(const float* w8, const float* const* x, int64_t at, float* acc) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
        const float4 a = *reinterpret_cast<const float4*>(x[t] + at);
        const float4 b = *reinterpret_cast<const float4*>(x[t] + at + 4);
        acc[t] += w8[0] * a.x + w8[1] * a.y + w8[2] * a.z + w8[3] * a.w + w8[4] * b.x + w8[5] * b.y + w8[6] * b.z +
                  w8[7] * b.w;
    }
}

// Weights in one 16-byte piece: 8 for f16 / bf16, 16 for int8.
template <WFormat F>
constexpr int per_piece() {
    return F == WFormat::int8 ? 16 : 8;
}

// One 16-byte piece as floats (int8: the stored integers).
template <WFormat F>
__device__ __forceinline__ void unpack_piece(uint4 v, float* f) {
    if constexpr (F == WFormat::bf16) {
        bf16x8(v, f);
    } else if constexpr (F == WFormat::f16) {
        f16x8(v, f);
    } else {
        const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
            for (int j = 0; j < 4; ++j) f[4 * k + j] = static_cast<float>(static_cast<int8_t>(u[k] >> (8 * j)));
        }
    }
}

// f16 / bf16 / int8 rows, cols a multiple of the piece: one 16-byte piece per lane per step
template <WFormat F, int T>
__device__ void row_pieces(const uint8_t* row, int64_t cols, const float* const* x, float* acc) {
    constexpr int n = per_piece<F>();
    const uint4* w = reinterpret_cast<const uint4*>(row);
    const int lane = threadIdx.x % 32;
#pragma unroll(F == WFormat::int8 ? 2 : 4)
    for (int64_t i = lane; i < cols / n; i += 32) {
        float f[n];
        unpack_piece<F>(__ldg(w + i), f);
#pragma unroll
        for (int h = 0; h < n; h += 8) dot8<T>(f + h, x, i * n + h, acc);
    }
}

// f32 rows, cols a multiple of 4
template <int T>
__device__ void row_f32(const uint8_t* row, int64_t cols, const float* const* x, float* acc) {
    const float4* w = reinterpret_cast<const float4*>(row);
    const int lane = threadIdx.x % 32;
#pragma unroll 4
    for (int64_t i = lane; i < cols / 4; i += 32) {
        const float4 v = __ldg(w + i);
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float4 a = *reinterpret_cast<const float4*>(x[t] + i * 4);
            acc[t] += v.x * a.x + v.y * a.y + v.z * a.z + v.w * a.w;
        }
    }
}

// GGML rows: lane = (chunk within the warp's 8) * 4 + quarter; a quarter is 8 weights, so a warp
// step reads 8 whole blocks of 32, or one super-block of 256
template <WFormat F, int T>
__device__ void row_blocks(const uint8_t* row, int64_t cols, const float* const* x, float* acc) {
    const int lane = threadIdx.x % 32;
    const int quarter = lane % 4;
#pragma unroll 2
    for (int64_t c = lane / 4; c < cols / 32; c += 8) {
        float f[8];
        int at[2];  // where the first four and the last four of f sit in the chunk
        dequant_quarter<F, block_align(F)>(row, c, quarter, f, at);
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float4 a = *reinterpret_cast<const float4*>(x[t] + c * 32 + at[0]);
            const float4 b = *reinterpret_cast<const float4*>(x[t] + c * 32 + at[1]);
            acc[t] += f[0] * a.x + f[1] * a.y + f[2] * a.z + f[3] * a.w + f[4] * b.x + f[5] * b.y + f[6] * b.z +
                      f[7] * b.w;
        }
    }
}

// any format, any alignment: one element (or block) at a time
template <WFormat F, int T>
__device__ void row_scalar(const uint8_t* row, int64_t cols, const float* const* x, float* acc) {
    const int lane = threadIdx.x % 32;
    if constexpr (!is_block_format(F)) {
        for (int64_t i = lane; i < cols; i += 32) {
            const float w = load_elem<F>(row, i);
#pragma unroll
            for (int t = 0; t < T; ++t) acc[t] += w * x[t][i];
        }
    } else {
        float f[32];
        for (int64_t c = lane; c < cols / 32; c += 32) {
            dequant_chunk<F, 1>(row, c, f);
#pragma unroll
            for (int t = 0; t < T; ++t) {
                for (int j = 0; j < 32; ++j) acc[t] += f[j] * x[t][c * 32 + j];
            }
        }
    }
}

template <WFormat F, int T, bool Vector>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvParams p) {
    const int64_t r = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
    if (r >= p.w.rows) return;
    const uint8_t* row = p.w.data + r * p.w.row_bytes;
    // T is the instantiated width (1, 2, 4, 8): tokens past p.tokens re-read the last one and are
    // not written
    float acc[T];
    const float* x[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
        acc[t] = 0.0f;
        x[t] = p.x + std::min<int64_t>(t, p.tokens - 1) * p.x_stride;
    }
    if constexpr (!Vector) {
        row_scalar<F, T>(row, p.w.cols, x, acc);
    } else if constexpr (F == WFormat::f32) {
        row_f32<T>(row, p.w.cols, x, acc);
    } else if constexpr (F == WFormat::f16 || F == WFormat::bf16 || F == WFormat::int8) {
        row_pieces<F, T>(row, p.w.cols, x, acc);
    } else {
        row_blocks<F, T>(row, p.w.cols, x, acc);
    }
    const float scale = row_scale<F>(p.w, r);
#pragma unroll
    for (int t = 0; t < T; ++t) {
        const float s = warp_sum(acc[t]) * scale;
        if (threadIdx.x % 32 == 0 && t < p.tokens) p.y[t * p.y_stride + r] = s;
    }
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// whether the 16-byte (or quarter-block) path may run: row starts and x rows aligned
bool vector_ok(const GemvParams& p) {
    const bool x_ok = aligned(p.x, 16) && p.x_stride % 4 == 0;
    switch (p.w.format) {
        case WFormat::f32: return x_ok && p.w.cols % 4 == 0 && rows_aligned(p.w, 16);
        case WFormat::f16:
        case WFormat::bf16: return x_ok && p.w.cols % 8 == 0 && rows_aligned(p.w, 16);
        case WFormat::int8: return x_ok && p.w.cols % 16 == 0 && rows_aligned(p.w, 16);
        default: return x_ok && rows_aligned(p.w, block_align(p.w.format));
    }
    return false;
}

template <WFormat F, int T>
void launch_tokens(const GemvParams& p, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(ceil_div(p.w.rows, kWarps))), block(kWarps * 32);
    if (vector_ok(p)) {
        launch_kernel(gemv_kernel<F, T, true>, grid, block, 0, stream, p);
    } else {
        launch_kernel(gemv_kernel<F, T, false>, grid, block, 0, stream, p);
    }
}

template <WFormat F>
void launch_format(const GemvParams& p, cudaStream_t stream) {
    switch (p.tokens) {
        case 1: launch_tokens<F, 1>(p, stream); break;
        case 2: launch_tokens<F, 2>(p, stream); break;
        case 3:
        case 4: launch_tokens<F, 4>(p, stream); break;
        default: launch_tokens<F, 8>(p, stream); break;
    }
}

}  // namespace

bool gemv_supported(const GemvParams& p) {
    return p.tokens >= 1 && p.tokens <= kGemvMaxTokens && p.w.cols > 0 && p.w.cols % block_elems(p.w.format) == 0;
}

void invoke_gemv(const GemvParams& p, cudaStream_t stream) {
    if (p.w.rows == 0) return;
    with_format(p.w.format, [&](auto tag) { launch_format<decltype(tag)::value>(p, stream); });
    TPS_CHECK_LAUNCH("gemv");
}

}  // namespace tps::cuda
