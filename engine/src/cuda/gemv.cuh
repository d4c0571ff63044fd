// Decode matrix-vector products: y[t][r] = dot(W row r, x[t]) for up to kGemvMaxTokens tokens,
// reading each weight once for all of them, straight from its stored format (f32, f16, bf16,
// int8 with its row scales, every GGML block format of formats.h; quantized weights are never
// expanded in memory). Each warp computes 1 to 4 weight rows (one read of x serves them all)
// with 16-byte loads (plain formats) or a block's widest aligned loads (GGML) where the row's
// alignment allows; f32 accumulation.
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

inline constexpr int64_t kGemvMaxTokens = 8;
inline constexpr int kGemvMaxParts = 3;  // q, k and v

// One matrix of a launch and where its products go.
struct GemvPart {
    WeightRows w;
    float* y = nullptr;  // tokens x y_stride
    int64_t y_stride = 0;
};

// Up to kGemvMaxParts matrices of one format and width over the same x, in one launch: q, k and
// v (or gate and up) cost one launch and stream their weights as one, where the small k and v
// alone leave the card idle between launches.
struct GemvParams {
    GemvPart part[kGemvMaxParts];
    int parts = 1;
    const float* x = nullptr;  // tokens x x_stride
    int64_t x_stride = 0;
    int64_t tokens = 0;
};

bool gemv_supported(const GemvParams& p);
void invoke_gemv(const GemvParams& p, cudaStream_t stream);

}  // namespace tps::cuda
