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

template <WFormat F>
__global__ void dequant_bf16_kernel(const uint8_t* w, int64_t row_bytes, int64_t cols, int64_t r0, __nv_bfloat16* out) {
    const int64_t r = blockIdx.x;
    const uint8_t* row = w + (r0 + r) * row_bytes;
    float f[32];
    for (int64_t b = threadIdx.x; b < cols / 32; b += blockDim.x) {
        dequant_block<F>(row, b, f);
#pragma unroll
        for (int j = 0; j < 32; ++j) out[r * cols + b * 32 + j] = __float2bfloat16_rn(f[j]);
    }
}

int64_t x16_bytes(const GemmParams& p) { return (p.tokens * p.w.cols * 2 + 255) / 256 * 256; }

}  // namespace

int64_t gemm_slice_rows(const GemmParams& p) {
    return std::max<int64_t>(1, std::min(p.w.rows, kGemmSliceBytes / (p.w.cols * 2)));
}

int64_t gemm_workspace_bytes(const GemmParams& p) {
    if (p.w.format == WFormat::f32) return 0;
    return x16_bytes(p) + (is_block_format(p.w.format) ? gemm_slice_rows(p) * p.w.cols * 2 : 0);
}

bool gemm_supported(const GemmParams& p) {
    const WeightRows& w = p.w;
    const bool blocks = is_block_format(w.format);
    return p.tokens >= 1 && w.cols > 0 && w.rows > 0 && p.y_stride >= w.rows && (!blocks || w.cols % 32 == 0) &&
           (w.format == WFormat::f32 ? w.row_bytes == w.cols * 4 : blocks || w.row_bytes == w.cols * 2) &&
           w.cols <= INT32_MAX && w.rows <= INT32_MAX && p.tokens <= INT32_MAX;
}

void invoke_dequant_bf16(const GemmParams& p, int64_t r0, int64_t n, void* out_bytes, cudaStream_t stream) {
    auto* out = static_cast<__nv_bfloat16*>(out_bytes);
    const dim3 grid(static_cast<unsigned>(n)), block(128);
    const WeightRows& w = p.w;
    switch (w.format) {
        case WFormat::q8_0: dequant_bf16_kernel<WFormat::q8_0><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.cols, r0, out); break;
        case WFormat::q4_0: dequant_bf16_kernel<WFormat::q4_0><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.cols, r0, out); break;
        case WFormat::q4_1: dequant_bf16_kernel<WFormat::q4_1><<<grid, block, 0, stream>>>(w.data, w.row_bytes, w.cols, r0, out); break;
        case WFormat::f32:
        case WFormat::f16:
        case WFormat::bf16: return;
    }
    TPS_CHECK_LAUNCH("dequant_bf16");
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
    auto* x16 = static_cast<uint8_t*>(workspace);
    const cudaDataType_t type = p.w.format == WFormat::f16 ? CUDA_R_16F : CUDA_R_16BF;
    if (p.w.format == WFormat::f16) {
        invoke_to_f16(p.x, x16, p.tokens * p.w.cols, stream);
    } else {
        invoke_to_bf16(p.x, x16, p.tokens * p.w.cols, stream);
    }
    if (!is_block_format(p.w.format)) {
        TPS_CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, p.w.data, type, k, x16, type, k,
                                      &zero, p.y, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return;
    }
    auto* slice = reinterpret_cast<__nv_bfloat16*>(x16 + x16_bytes(p));
    const int64_t step = gemm_slice_rows(p);
    for (int64_t r0 = 0; r0 < p.w.rows; r0 += step) {
        const int64_t rows = std::min(step, p.w.rows - r0);
        invoke_dequant_bf16(p, r0, rows, slice, stream);
        TPS_CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), n, k, &one, slice,
                                      CUDA_R_16BF, k, x16, CUDA_R_16BF, k, &zero, p.y + r0, CUDA_R_32F, ldc,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
}

}  // namespace tps::cuda
