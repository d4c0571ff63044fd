// RMSNorm per row, as HF's LlamaRMSNorm in f32: out = w * (x * rsqrt(mean(x^2) + eps)); and the
// residual add before it fused in.
// x, out: (rows, cols) f32; w: cols f32.
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

struct RmsNormParams {
    const float* x = nullptr;
    const float* w = nullptr;
    float* out = nullptr;
    int64_t rows = 0, cols = 0;
    float eps = 1e-5f;
};

bool rmsnorm_supported(const RmsNormParams& p);
void invoke_rmsnorm(const RmsNormParams& p, cudaStream_t stream);
// x += y (x is p.x, written back), then the norm of the sum into p.out: one pass over x where an
// add then a norm make two, with the same float operations as invoke_add then invoke_rmsnorm
void invoke_add_rmsnorm(const RmsNormParams& p, float* x, const float* y, cudaStream_t stream);

}  // namespace tps::cuda
