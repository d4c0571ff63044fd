// One block per row; a thread per (head, pair).
#include "common.cuh"
#include "cuda_check.h"
#include "rope.cuh"

namespace tps::cuda {
namespace {

__global__ void rope_kernel(RopeParams p) {
    float* row = p.x + blockIdx.x * p.cols;
    const float pos = static_cast<float>(p.positions[blockIdx.x]);
    const int64_t heads = p.cols / p.head_dim;
    for (int64_t e = threadIdx.x; e < heads * p.half; e += blockDim.x) {
        const int64_t h = e / p.half, i = e % p.half;
        float s, c;
        sincosf(p.inv_freq[i] * pos, &s, &c);
        float* v = row + h * p.head_dim;
        const int64_t a = p.adjacent ? 2 * i : i;
        const int64_t b = p.adjacent ? 2 * i + 1 : i + p.half;
        const float x1 = v[a], x2 = v[b];
        v[a] = x1 * c - x2 * s;
        v[b] = x2 * c + x1 * s;
    }
}

}  // namespace

bool rope_supported(const RopeParams& p) {
    return p.head_dim > 0 && p.cols % p.head_dim == 0 && p.half >= 0 && 2 * p.half <= p.head_dim;
}

void invoke_rope(const RopeParams& p, cudaStream_t stream) {
    if (p.rows == 0 || p.half == 0) return;
    launch_kernel(rope_kernel, static_cast<unsigned>(p.rows), 256, 0, stream, p);
    TPS_CHECK_LAUNCH("rope");
}

}  // namespace tps::cuda
