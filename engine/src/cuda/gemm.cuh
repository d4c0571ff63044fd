// Prefill and batched-decode products y = x W^T through cuBLAS: x (tokens, cols) f32 is rounded to
// 16 bits (bf16 for bf16 weights, f16 for every other) and multiplied with f32 accumulation into
// f32 y; f32 weights use an f32 GEMM. GGML and int8 weights are expanded to f16 a slice of rows at
// a time into a bounded workspace, never as a whole matrix; int8 expands to its integers (exact in
// f16) and each slice's rows of y are then multiplied by their scales.
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

#include <cublas_v2.h>

namespace tps::cuda {

struct GemmParams {
    WeightRows w;
    const float* x = nullptr;  // tokens x cols, contiguous
    int64_t tokens = 0;
    float* y = nullptr;  // tokens x y_stride
    int64_t y_stride = 0;
    // the workspace holds x in this product's 16-bit type already: a product before it on the same
    // x and stream converted it (matmul_multi's q, k and v; gate and up)
    bool x16_ready = false;
};

// The type x is rounded to for a product with weights of format `f` (f32 weights: none).
enum class GemmInput { f32, bf16, f16 };
constexpr GemmInput gemm_input(WFormat f) {
    return f == WFormat::f32 ? GemmInput::f32 : f == WFormat::bf16 ? GemmInput::bf16 : GemmInput::f16;
}

// Workspace bytes the product needs: x in 16 bits first and, for GGML weights, a slice of expanded
// rows after it (so products of one x can share its converted copy).
int64_t gemm_workspace_bytes(const GemmParams& p);
// Rows of a GGML weight expanded per cuBLAS call (bounded by kGemmSliceBytes of workspace).
int64_t gemm_slice_rows(const GemmParams& p);
inline constexpr int64_t kGemmSliceBytes = int64_t{64} << 20;

bool gemm_supported(const GemmParams& p);
// `handle` runs on `stream` already (cublasSetStream resets a workspace set with cublasSetWorkspace)
void invoke_gemm(const GemmParams& p, cublasHandle_t handle, void* workspace, cudaStream_t stream);

// Rows [r0, r0 + n) of a GGML weight as f16, row-major (n x cols); of an int8 weight, its
// integers (without the scales).
void invoke_dequant_f16(const GemmParams& p, int64_t r0, int64_t n, void* out, cudaStream_t stream);

}  // namespace tps::cuda
