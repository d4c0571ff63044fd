// Rotary embedding of every head of x (rows, heads * head_dim) by its row's position: pairs
// (2i, 2i+1) when `adjacent` (llama.cpp's permuted Q/K), else (i, i + rotary/2). Angles in f32
// as torch computes them (inv_freq[i] * position). Elements past rotary_dims are left alone.
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

struct RopeParams {
    float* x = nullptr;
    int64_t rows = 0, cols = 0, head_dim = 0;
    int64_t half = 0;                  // rotary_dims / 2
    bool adjacent = false;
    const float* inv_freq = nullptr;   // half, device
    const int32_t* positions = nullptr;  // rows, device
};

bool rope_supported(const RopeParams& p);
void invoke_rope(const RopeParams& p, cudaStream_t stream);

}  // namespace tps::cuda
