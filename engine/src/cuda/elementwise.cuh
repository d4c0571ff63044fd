// The small element-wise ops: x += y; y[r] += b; out = silu(gate) * up; out[i] = x[rows[i]];
// out[rows[i]] += s[i] * y[i]; and f32 rows to bf16 or f16 (the GEMM's input). All (rows, cols) f32, contiguous, on the device.
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

#include <string>

namespace tps::cuda {

// "" when this build holds kernels the device can run; else why not (built for other architectures)
std::string kernels_unavailable(int device);

void invoke_add(float* x, const float* y, int64_t n, cudaStream_t stream);
void invoke_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream);
void invoke_swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// rows: n_rows device indices into x
void invoke_gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out,
                        cudaStream_t stream);
// out[rows[i]] += scales[i] * y[i] for i < n_rows (an MoE expert's output into its tokens' rows;
// rows distinct); rows and scales on the device
void invoke_add_rows_scaled(const float* y, const int32_t* rows, const float* scales, int64_t n_rows, int64_t cols,
                            float* out, cudaStream_t stream);
// out = x rounded to nearest even; f16 saturates at its largest finite value
// out: n 16-bit values (__nv_bfloat16 / __half)
void invoke_to_bf16(const float* x, void* out, int64_t n, cudaStream_t stream);
void invoke_to_f16(const float* x, void* out, int64_t n, cudaStream_t stream);

}  // namespace tps::cuda
