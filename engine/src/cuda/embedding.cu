// One block per looked-up token; threads stride over the row's elements (plain formats) or its
// 32-element chunks (GGML formats).
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
    if constexpr (!is_block_format(F)) {
        const float scale = row_scale<F>(p.table, row);
        for (int64_t c = threadIdx.x; c < p.table.cols; c += blockDim.x) dst[c] = load_elem<F>(src, c) * scale;
    } else {
        float vals[32];
        for (int64_t c = threadIdx.x; c < p.table.cols / 32; c += blockDim.x) {
            dequant_chunk<F, 1>(src, c, vals);  // byte loads: a lookup of a few rows
#pragma unroll
            for (int j = 0; j < 32; ++j) dst[c * 32 + j] = vals[j];
        }
    }
}

}  // namespace

bool embedding_supported(const EmbeddingParams& p) {
    return p.n >= 0 && p.table.cols > 0 && p.table.cols % block_elems(p.table.format) == 0;
}

void invoke_embedding(const EmbeddingParams& p, cudaStream_t stream) {
    if (p.n == 0) return;
    const dim3 grid(static_cast<unsigned>(p.n)), block(256);
    with_format(p.table.format, [&](auto tag) { launch_kernel(embedding_kernel<decltype(tag)::value>, grid, block, 0, stream, p); });
    TPS_CHECK_LAUNCH("embedding");
}

}  // namespace tps::cuda
