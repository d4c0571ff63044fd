// Row-major y (tokens x R) = x (tokens x C) W^T is, in cuBLAS's column-major terms,
// Y (R x tokens) = W^T (R x C, W stored C x R) * X (C x tokens): op(A) = T, op(B) = N.
#include "cublas_check.h"
#include "common.cuh"
#include "cuda_check.h"
#include "elementwise.cuh"
#include "gemm.cuh"

#include <algorithm>

namespace tps::cuda {
namespace {

template <WFormat F, int A>
__global__ void dequant_f16_kernel(const uint8_t* w, int64_t row_bytes, int64_t cols, int64_t r0, __half* out) {
    const int64_t r = blockIdx.x;
    const uint8_t* row = w + (r0 + r) * row_bytes;
    float f[32];
    for (int64_t c = threadIdx.x; c < cols / 32; c += blockDim.x) {
        dequant_chunk<F, A>(row, c, f);
#pragma unroll
        for (int j = 0; j < 32; ++j) out[r * cols + c * 32 + j] = __float2half_rn(f[j]);
    }
}

// int8 rows to f16: the integers exactly (f16 holds every int8); the scales are applied to y
__global__ void int8_f16_kernel(const uint8_t* w, int64_t cols, int64_t r0, __half* out) {
    const int64_t r = blockIdx.x;
    const auto* row = reinterpret_cast<const int8_t*>(w + (r0 + r) * cols);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * cols + c] = __float2half_rn(static_cast<float>(row[c]));
}

// y[t][r0 + i] *= scale[r0 + i] for i < n and every token t (grid.y strides over the tokens)
__global__ void scale_rows_kernel(float* y, int64_t y_stride, int64_t tokens, int64_t r0, int64_t n,
                                  const uint8_t* scales) {
    const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float s = half_bits_to_f32(load_u16(scales + 2 * (r0 + i)));
    for (int64_t t = blockIdx.y; t < tokens; t += gridDim.y) y[t * y_stride + r0 + i] *= s;
}

int64_t x16_bytes(const GemmParams& p) { return (p.tokens * p.w.cols * 2 + 255) / 256 * 256; }

}  // namespace

int64_t gemm_slice_rows(const GemmParams& p) {
    return std::max<int64_t>(1, std::min(p.w.rows, kGemmSliceBytes / (p.w.cols * 2)));
}

int64_t gemm_workspace_bytes(const GemmParams& p) {
    if (p.w.format == WFormat::f32) return 0;
    return x16_bytes(p) + (expands_for_gemm(p.w.format) ? gemm_slice_rows(p) * p.w.cols * 2 : 0);
}

bool gemm_supported(const GemmParams& p) {
    const WeightRows& w = p.w;
    const bool blocks = is_block_format(w.format);
    const int64_t elem = w.format == WFormat::f32 ? 4 : w.format == WFormat::int8 ? 1 : 2;
    const int64_t per = block_elems(w.format);
    const bool packed = blocks ? w.cols % per == 0 && w.row_bytes == w.cols / per * block_bytes(w.format)
                               : w.row_bytes == w.cols * elem;
    return p.tokens >= 1 && w.cols > 0 && w.rows > 0 && p.y_stride >= w.rows && packed &&
           (w.format != WFormat::int8 || w.scales != nullptr) &&
           w.cols <= INT32_MAX && w.rows <= INT32_MAX && p.tokens <= INT32_MAX;
}

void invoke_dequant_f16(const GemmParams& p, int64_t r0, int64_t n, void* out_bytes, cudaStream_t stream) {
    auto* out = static_cast<__half*>(out_bytes);
    const dim3 grid(static_cast<unsigned>(n)), block(128);
    const WeightRows& w = p.w;
    if (!expands_for_gemm(w.format)) return;
    if (w.format == WFormat::int8) {
        launch_kernel(int8_f16_kernel, grid, block, 0, stream, w.data, w.cols, r0, out);
    } else {
        const bool wide = rows_aligned(w, block_align(w.format));
        with_format(w.format, [&](auto tag) {
            constexpr WFormat F = decltype(tag)::value;
            if constexpr (is_block_format(F)) {
                auto kernel = wide ? dequant_f16_kernel<F, block_align(F)> : dequant_f16_kernel<F, 1>;
                launch_kernel(kernel, grid, block, 0, stream, w.data, w.row_bytes, w.cols, r0, out);
            }
        });
    }
    TPS_CHECK_LAUNCH("dequant_f16");
}

void invoke_gemm(const GemmParams& p, cublasHandle_t handle, void* workspace, cudaStream_t stream) {
    const float one = 1.0f, zero = 0.0f;
    const int m = static_cast<int>(p.w.rows), n = static_cast<int>(p.tokens), k = static_cast<int>(p.w.cols);
    const int ldc = static_cast<int>(p.y_stride);
    if (p.w.format == WFormat::f32) {
        TPS_CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, p.w.data, CUDA_R_32F, k, p.x,
                                      CUDA_R_32F, k, &zero, p.y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
        return;
    }
    // x in the weights' 16-bit type: bf16 for bf16 weights, f16 for the rest (GGML blocks and int8
    // expand to f16, as llama.cpp's do: 3 bits more than bf16, and their values are f16 scales
    // times small integers). f16 saturates at 65504 (invoke_to_f16).
    auto* x16 = static_cast<uint8_t*>(workspace);
    const bool bf16 = gemm_input(p.w.format) == GemmInput::bf16;
    const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    if (p.x16_ready) {
        // converted by an earlier product of the same x (CudaBackend::matmul_multi)
    } else if (bf16) {
        invoke_to_bf16(p.x, x16, p.tokens * p.w.cols, stream);
    } else {
        invoke_to_f16(p.x, x16, p.tokens * p.w.cols, stream);
    }
    if (!expands_for_gemm(p.w.format)) {
        TPS_CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, p.w.data, type, k, x16, type, k,
                                      &zero, p.y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return;
    }
    auto* slice = reinterpret_cast<__half*>(x16 + x16_bytes(p));
    const int64_t step = gemm_slice_rows(p);
    for (int64_t r0 = 0; r0 < p.w.rows; r0 += step) {
        const int64_t rows = std::min(step, p.w.rows - r0);
        invoke_dequant_f16(p, r0, rows, slice, stream);
        TPS_CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), n, k, &one, slice,
                                      CUDA_R_16F, k, x16, CUDA_R_16F, k, &zero, p.y + r0, CUDA_R_32F, ldc,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        if (p.w.format == WFormat::int8) {
            const dim3 grid(static_cast<unsigned>(ceil_div(rows, 256)), static_cast<unsigned>(std::min<int64_t>(p.tokens, 65535)));
            launch_kernel(scale_rows_kernel, grid, 256, 0, stream, p.y, p.y_stride, p.tokens, r0, rows, p.w.scales);
            TPS_CHECK_LAUNCH("gemm int8 scales");
        }
    }
}

}  // namespace tps::cuda
