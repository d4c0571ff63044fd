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
    float* dst = p.out + i * p.table.cols;
    const int64_t row = static_cast<int64_t>(p.ids[i]) - p.vocab_first;
    if (row < 0 || row >= p.table.rows) {
        for (int64_t c = threadIdx.x; c < p.table.cols; c += blockDim.x) dst[c] = 0.0f;
        return;
    }
    const uint8_t* src = p.table.data + row * p.table.row_bytes;
    if constexpr (block_bytes<F>() == 0) {
        const float scale = row_scale<F>(p.table, row);
        for (int64_t c = threadIdx.x; c < p.table.cols; c += blockDim.x) dst[c] = load_elem<F>(src, c) * scale;
    } else {
        float vals[32];
        for (int64_t b = threadIdx.x; b < p.table.cols / 32; b += blockDim.x) {
            dequant_block<F>(src, b, vals);
#pragma unroll
            for (int j = 0; j < 32; ++j) dst[b * 32 + j] = vals[j];
        }
    }
}

}  // namespace

bool embedding_supported(const EmbeddingParams& p) {
    return p.n >= 0 && p.table.cols > 0 && (!is_block_format(p.table.format) || p.table.cols % 32 == 0);
}

void invoke_embedding(const EmbeddingParams& p, cudaStream_t stream) {
    if (p.n == 0) return;
    const dim3 grid(static_cast<unsigned>(p.n)), block(256);
    switch (p.table.format) {
        case WFormat::f32: launch_kernel(embedding_kernel<WFormat::f32>, grid, block, 0, stream, p); break;
        case WFormat::f16: launch_kernel(embedding_kernel<WFormat::f16>, grid, block, 0, stream, p); break;
        case WFormat::bf16: launch_kernel(embedding_kernel<WFormat::bf16>, grid, block, 0, stream, p); break;
        case WFormat::int8: launch_kernel(embedding_kernel<WFormat::int8>, grid, block, 0, stream, p); break;
        case WFormat::q8_0: launch_kernel(embedding_kernel<WFormat::q8_0>, grid, block, 0, stream, p); break;
        case WFormat::q4_0: launch_kernel(embedding_kernel<WFormat::q4_0>, grid, block, 0, stream, p); break;
        case WFormat::q4_1: launch_kernel(embedding_kernel<WFormat::q4_1>, grid, block, 0, stream, p); break;
    }
    TPS_CHECK_LAUNCH("embedding");
}

}  // namespace tps::cuda
