// One block per row: a block-wide sum of squares, then the scaled row (after the residual add, in
// add_rmsnorm).
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

// The same per row after x[c] += y[c], each thread adding, squaring and scaling its own columns
// (so it reads back only what it wrote)
__global__ void add_rmsnorm_kernel(RmsNormParams p, float* x_rows, const float* y_rows) {
    float* x = x_rows + blockIdx.x * p.cols;
    const float* y = y_rows + blockIdx.x * p.cols;
    float* out = p.out + blockIdx.x * p.cols;
    float ss = 0;
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
        const float v = x[c] + y[c];
        x[c] = v;
        ss += v * v;
    }
    ss = block_sum(ss);
    const float inv = 1.0f / sqrtf(ss / static_cast<float>(p.cols) + p.eps);
    for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) out[c] = p.w[c] * (x[c] * inv);
}

int threads_for(int64_t cols) { return cols >= 4096 ? 1024 : cols >= 1024 ? 512 : 256; }

}  // namespace

bool rmsnorm_supported(const RmsNormParams& p) { return p.rows >= 0 && p.cols > 0; }

void invoke_rmsnorm(const RmsNormParams& p, cudaStream_t stream) {
    if (p.rows == 0) return;
    launch_kernel(rmsnorm_kernel, static_cast<unsigned>(p.rows), threads_for(p.cols), 0, stream, p);
    TPS_CHECK_LAUNCH("rmsnorm");
}

void invoke_add_rmsnorm(const RmsNormParams& p, float* x, const float* y, cudaStream_t stream) {
    if (p.rows == 0) return;
    launch_kernel(add_rmsnorm_kernel, static_cast<unsigned>(p.rows), threads_for(p.cols), 0, stream, p, x, y);
    TPS_CHECK_LAUNCH("add_rmsnorm");
}

}  // namespace tps::cuda
