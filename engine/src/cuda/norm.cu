// One block per row: a block-wide sum of squares, then the scaled row.
#include "common.cuh"
#include "cuda_check.h"
#include "norm.cuh"

namespace tps::cuda {
namespace {

__global__ void rmsnorm_kernel(RmsNormParams p) {
    const float* x = p.x + blockIdx.x * p.cols;
    float* out = p.out + blockIdx.x * p.cols;
    float ss = 0;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) ss += x[c] * x[c];
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(p.cols) + p.eps);
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) out[c] = p.w[c] * (x[c] * inv);
}

}  // namespace

bool rmsnorm_supported(const RmsNormParams& p) { return p.rows >= 0 && p.cols > 0; }

void invoke_rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
    if (p.rows == 0) return;
    const int threads = p.cols >= 4096 ? 1024 : p.cols >= 1024 ? 512 : 256;
    launch_kernel(rmsnorm_kernel, static_cast<unsigned>(p.rows), threads, 0, stream, p);
    TPS_CHECK_LAUNCH("rmsnorm");
}

}  // namespace tps::cuda
