// One block per looked-up token; threads stride over the row's elements (plain formats) or its
// 32-element blocks (GGML formats).
#include "common.cuh"
#include "cuda_check.h"
#include "embedding.cuh"

namespace tps::cuda {
namespace {

template <WFormat F>
__global__ void embedding_kernel(EmbeddingParams p) {
    const int64_t i = blockIdx.x;
    float* dst = p.out + i * p.cols;
    const int64_t row = static_cast<int64_t>(p.ids[i]) - p.vocab_first;
    if (row < 0 || row >= p.rows) {
        for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = 0.0f;
        return;
    }
    const uint8_t* src = p.table + row * p.row_bytes;
    if constexpr (block_bytes<F>() == 0) {
        for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) dst[c] = load_elem<F>(src, c);
    } else {
        float vals[32];
        for (int64_t b = threadIdx.x; b < p.cols / 32; b += blockDim.x) {
            dequant_block<F>(src, b, vals);
#pragma unroll
            for (int j = 0; j < 32; ++j) dst[b * 32 + j] = vals[j];
        }
    }
}

}  // namespace

bool embedding_supported(const EmbeddingParams& p) {
    const bool blocks = p.format == WFormat::q8_0 || p.format == WFormat::q4_0 || p.format == WFormat::q4_1;
    return p.n >= 0 && p.cols > 0 && (!blocks || p.cols % 32 == 0);
}

void invoke_embedding(const EmbeddingParams& p, cudaStream_t stream) {
    if (p.n == 0) return;
    const dim3 grid(static_cast<unsigned>(p.n)), block(256);
    switch (p.format) {
        case WFormat::f32: embedding_kernel<WFormat::f32><<<grid, block, 0, stream>>>(p); break;
        case WFormat::f16: embedding_kernel<WFormat::f16><<<grid, block, 0, stream>>>(p); break;
        case WFormat::bf16: embedding_kernel<WFormat::bf16><<<grid, block, 0, stream>>>(p); break;
        case WFormat::q8_0: embedding_kernel<WFormat::q8_0><<<grid, block, 0, stream>>>(p); break;
        case WFormat::q4_0: embedding_kernel<WFormat::q4_0><<<grid, block, 0, stream>>>(p); break;
        case WFormat::q4_1: embedding_kernel<WFormat::q4_1><<<grid, block, 0, stream>>>(p); break;
    }
    TPS_CHECK_LAUNCH("embedding");
}

}  // namespace tps::cuda
