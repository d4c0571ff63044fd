// RMSNorm per row, as HF's LlamaRMSNorm in f32: out = w * (x * rsqrt(mean(x^2) + eps)).
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

}  // namespace tps::cuda
