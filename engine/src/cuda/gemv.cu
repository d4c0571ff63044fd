// Each warp owns one to four weight rows (rows_per_warp) and walks them in 16-byte pieces (8
// halves, 4 floats or 16 int8 per lane), or for GGML formats in quarters of 32-element chunks (8
// weights per lane, 8 chunks per warp step: 8 blocks of 32 or one super-block of 256), so a
// warp's loads cover contiguous bytes. int8 sums integers times x and scales the row's finished
// sum. x is re-read from L1/L2 by every warp, once for all its rows; weights stream from DRAM
// once, which is what sets decode speed.
#include "common.cuh"
#include "cuda_check.h"
#include "gemv.cuh"

#include <algorithm>

namespace tps::cuda {
namespace {

constexpr int kWarps = 4;  // warps per block

// Weights in one 16-byte piece: 8 for f16 / bf16, 16 for int8.
template <WFormat F>
constexpr int per_piece() {
    return F == WFormat::int8 ? 16 : 8;
}

// Rows one warp computes together: each x load then serves R rows, which is what lets a step of
// several tokens stay bound by the weights' bytes rather than by reading x (8 tokens of f32 x are
// 16 times a bf16 piece's bytes). One token needs no sharing: one row per warp, but two for int8,
// whose shorter rows leave a warp too few loads in flight alone.
template <WFormat F, int T>
constexpr int rows_per_warp() {
    if constexpr (T == 1) {
        return F == WFormat::int8 ? 2 : 1;
    } else {
        return T == 2 ? 2 : 4;
    }
}

// int8 as float without a conversion instruction (I2F runs at a quarter of the FMA rate): byte j
// of u, offset to unsigned, becomes the low mantissa of 2^23, and the offset comes off again
__device__ __forceinline__ float int8_at(uint32_t u, int j) {
    const uint32_t biased = u ^ 0x80808080u;
    return __uint_as_float(__byte_perm(biased, 0x4b000000u, 0x7440u + static_cast<uint32_t>(j))) - 8388736.0f;
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
            for (int j = 0; j < 4; ++j) f[4 * k + j] = int8_at(u[k], j);
        }
    }
}

// 8 weights of each of R rows (w8[r]) at element `at` of every token's x, accumulated: x is read
// once for all R rows
template <int T, int R>
__device__ __forceinline__ void dot8_rows(const float (*w8)[8], const float* const* x, int64_t at, float (*acc)[T]) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
        const float4 a = *reinterpret_cast<const float4*>(x[t] + at);
        const float4 b = *reinterpret_cast<const float4*>(x[t] + at + 4);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const float* w = w8[r];
            acc[r][t] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z +
                         w[7] * b.w;
        }
    }
}

// f16 / bf16 / int8 rows, cols a multiple of the piece: one 16-byte piece of each row per lane
// per step
template <WFormat F, int T, int R>
__device__ void rows_pieces(const uint8_t* const* rows, int64_t cols, const float* const* x, float (*acc)[T]) {
    constexpr int n = per_piece<F>();
    const int lane = threadIdx.x % 32;
#pragma unroll((F == WFormat::int8 ? 2 : 4) / (R > 2 ? 2 : 1))
    for (int64_t i = lane; i < cols / n; i += 32) {
        uint4 v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = __ldg(reinterpret_cast<const uint4*>(rows[r]) + i);
#pragma unroll
        for (int h = 0; h < n; h += 8) {
            float f[R][8];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float all[n];
                unpack_piece<F>(v[r], all);
#pragma unroll
                for (int j = 0; j < 8; ++j) f[r][j] = all[h + j];
            }
            dot8_rows<T, R>(f, x, i * n + h, acc);
        }
    }
}

// f32 rows, cols a multiple of 4
template <int T, int R>
__device__ void rows_f32(const uint8_t* const* rows, int64_t cols, const float* const* x, float (*acc)[T]) {
    const int lane = threadIdx.x % 32;
#pragma unroll(R > 1 ? 2 : 4)
    for (int64_t i = lane; i < cols / 4; i += 32) {
        float4 v[R];
#pragma unroll
        for (int r = 0; r < R; ++r) v[r] = __ldg(reinterpret_cast<const float4*>(rows[r]) + i);
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float4 a = *reinterpret_cast<const float4*>(x[t] + i * 4);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][t] += v[r].x * a.x + v[r].y * a.y + v[r].z * a.z + v[r].w * a.w;
        }
    }
}

// GGML rows: lane = (chunk within the warp's 8) * 4 + quarter; a quarter is 8 weights, so a warp
// step reads 8 whole blocks of 32, or one super-block of 256, of each row
template <WFormat F, int T, int R>
__device__ void rows_blocks(const uint8_t* const* rows, int64_t cols, const float* const* x, float (*acc)[T]) {
    const int lane = threadIdx.x % 32;
    const int quarter = lane % 4;
#pragma unroll(R > 1 ? 1 : 2)
    for (int64_t c = lane / 4; c < cols / 32; c += 8) {
        float f[R][8];
        int at[2];  // where the first four and the last four of f sit in the chunk (alike in every row)
#pragma unroll
        for (int r = 0; r < R; ++r) dequant_quarter<F, block_align(F)>(rows[r], c, quarter, f[r], at);
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float4 a = *reinterpret_cast<const float4*>(x[t] + c * 32 + at[0]);
            const float4 b = *reinterpret_cast<const float4*>(x[t] + c * 32 + at[1]);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                acc[r][t] += f[r][0] * a.x + f[r][1] * a.y + f[r][2] * a.z + f[r][3] * a.w + f[r][4] * b.x +
                             f[r][5] * b.y + f[r][6] * b.z + f[r][7] * b.w;
            }
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

// A launch's parts, with the first block of each (blocks of a part compute its rows only).
struct GemvLaunch {
    GemvParams p;
    unsigned first_block[kGemvMaxParts] = {};
};

// Each warp computes R = rows_per_warp<F, T>() consecutive rows (the scalar path one) of its
// block's part.
template <WFormat F, int T, bool Vector>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(GemvLaunch L) {
    constexpr int R = Vector ? rows_per_warp<F, T>() : 1;
    const GemvParams& p = L.p;
    // the block's part, chosen without indexing the parameters by a run-time value (which would
    // copy them to local memory)
    WeightRows w = p.part[0].w;
    float* y = p.part[0].y;
    int64_t y_stride = p.part[0].y_stride;
    unsigned first = 0;
#pragma unroll
    for (int i = 1; i < kGemvMaxParts; ++i) {
        if (i < p.parts && blockIdx.x >= L.first_block[i]) {
            w = p.part[i].w;
            y = p.part[i].y;
            y_stride = p.part[i].y_stride;
            first = L.first_block[i];
        }
    }
    const int64_t r0 = (int64_t{blockIdx.x - first} * kWarps + threadIdx.x / 32) * R;
    if (r0 >= w.rows) return;
    // rows past the last re-read it and are not written
    const uint8_t* rows[R];
#pragma unroll
    for (int r = 0; r < R; ++r) rows[r] = w.data + std::min<int64_t>(r0 + r, w.rows - 1) * w.row_bytes;
    // T is the instantiated width (1, 2, 4, 8): tokens past p.tokens re-read the last one and are
    // not written
    float acc[R][T];
    const float* x[T];
#pragma unroll
    for (int t = 0; t < T; ++t) {
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][t] = 0.0f;
        x[t] = p.x + std::min<int64_t>(t, p.tokens - 1) * p.x_stride;
    }
    if constexpr (!Vector) {
        row_scalar<F, T>(rows[0], w.cols, x, acc[0]);
    } else if constexpr (F == WFormat::f32) {
        rows_f32<T, R>(rows, w.cols, x, acc);
    } else if constexpr (F == WFormat::f16 || F == WFormat::bf16 || F == WFormat::int8) {
        rows_pieces<F, T, R>(rows, w.cols, x, acc);
    } else {
        rows_blocks<F, T, R>(rows, w.cols, x, acc);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        if (r0 + r >= w.rows) break;  // the same for every lane of the warp
        const float scale = row_scale<F>(w, r0 + r);
#pragma unroll
        for (int t = 0; t < T; ++t) {
            const float s = warp_sum(acc[r][t]) * scale;
            if (threadIdx.x % 32 == 0 && t < p.tokens) y[t * y_stride + r0 + r] = s;
        }
    }
}

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// whether the 16-byte (or quarter-block) path may run: row starts and x rows aligned
bool vector_ok(const GemvParams& p, const WeightRows& w) {
    const bool x_ok = aligned(p.x, 16) && p.x_stride % 4 == 0;
    switch (w.format) {
        case WFormat::f32: return x_ok && w.cols % 4 == 0 && rows_aligned(w, 16);
        case WFormat::f16:
        case WFormat::bf16: return x_ok && w.cols % 8 == 0 && rows_aligned(w, 16);
        case WFormat::int8: return x_ok && w.cols % 16 == 0 && rows_aligned(w, 16);
        default: return x_ok && rows_aligned(w, block_align(w.format));
    }
    return false;
}

template <WFormat F, int T, bool Vector>
void launch_parts(const GemvParams& p, cudaStream_t stream) {
    constexpr int64_t per_block = int64_t{kWarps} * (Vector ? rows_per_warp<F, T>() : 1);
    GemvLaunch L{p};
    int64_t blocks = 0;
    for (int i = 0; i < p.parts; ++i) {
        L.first_block[i] = static_cast<unsigned>(blocks);
        blocks += ceil_div(p.part[i].w.rows, per_block);
    }
    if (blocks == 0) return;
    launch_kernel(gemv_kernel<F, T, Vector>, dim3(static_cast<unsigned>(blocks)), dim3(kWarps * 32), 0, stream, L);
}

template <WFormat F, int T>
void launch_tokens(const GemvParams& p, cudaStream_t stream) {
    bool vector = true;
    for (int i = 0; i < p.parts; ++i) vector = vector && vector_ok(p, p.part[i].w);
    if (vector) {
        launch_parts<F, T, true>(p, stream);
    } else if (p.parts == 1) {
        launch_parts<F, T, false>(p, stream);
    } else {
        // each part on the path its own alignment allows
        for (int i = 0; i < p.parts; ++i) {
            GemvParams one = p;
            one.part[0] = p.part[i];
            one.parts = 1;
            launch_tokens<F, T>(one, stream);
        }
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
    if (p.tokens < 1 || p.tokens > kGemvMaxTokens || p.parts < 1 || p.parts > kGemvMaxParts) return false;
    const WeightRows& first = p.part[0].w;
    for (int i = 0; i < p.parts; ++i) {
        const WeightRows& w = p.part[i].w;
        if (w.format != first.format || w.cols != first.cols || w.cols <= 0 || w.cols % block_elems(w.format) != 0 ||
            p.part[i].y == nullptr) {
            return false;
        }
    }
    // a grid of at most 2^31 - 1 blocks of 4 rows or more
    int64_t rows = 0;
    for (int i = 0; i < p.parts; ++i) rows += p.part[i].w.rows;
    return rows / kWarps < INT32_MAX;
}

void invoke_gemv(const GemvParams& p, cudaStream_t stream) {
    with_format(p.part[0].w.format, [&](auto tag) { launch_format<decltype(tag)::value>(p, stream); });
    TPS_CHECK_LAUNCH("gemv");
}

}  // namespace tps::cuda
