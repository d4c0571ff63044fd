// One block per row: an arg-max reduction (ties to the lowest column, as the CPU's scan), then the
// sum of exponentials against the maximum, accumulated in double across the block.
#include "common.cuh"
#include "cuda_check.h"
#include "greedy.cuh"

namespace tps::cuda {
namespace {

struct Pick {
    float max;
    int32_t token;
    float sum_exp;
};
static_assert(sizeof(Pick) == 12, "GreedyPick's layout");

constexpr int kThreads = 1024;

__device__ __forceinline__ void better(float& m, int64_t& at, float m2, int64_t at2) {
    if (m2 > m || (m2 == m && at2 < at)) {
        m = m2;
        at = at2;
    }
}

// the best (max, lowest column) over the warp, in every lane
__device__ __forceinline__ void warp_best(float& m, int64_t& at) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const int64_t at2 = __shfl_xor_sync(0xffffffffu, at, o);
        better(m, at, m2, at2);
    }
}

__global__ void __launch_bounds__(kThreads) greedy_kernel(GreedyParams p) {
    __shared__ float s_max[32];
    __shared__ int64_t s_at[32];
    __shared__ double s_sum[32];
    const float* row = p.logits + blockIdx.x * p.cols;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // (-inf, column 0) as the start, as the CPU's scan starts at column 0: a row of -inf (or of
    // NaN, which never wins a comparison) picks column 0, never one past the row
    float m = -INFINITY;
    int64_t at = 0;
    for (int64_t i = threadIdx.x; i < p.cols; i += kThreads) better(m, at, row[i], i);
    warp_best(m, at);
    if (lane == 0) {
        s_max[warp] = m;
        s_at[warp] = at;
    }
    __syncthreads();
    if (warp == 0) {
        m = s_max[lane];
        at = s_at[lane];
        warp_best(m, at);
        if (lane == 0) {
            s_max[0] = m;
            s_at[0] = at;
        }
    }
    __syncthreads();
    const float best = s_max[0];
    double sum = 0;
    for (int64_t i = threadIdx.x; i < p.cols; i += kThreads) sum += static_cast<double>(expf(row[i] - best));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) s_sum[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0;
        for (int w = 0; w < kThreads / 32; ++w) total += s_sum[w];
        Pick* out = static_cast<Pick*>(p.out) + blockIdx.x;
        out->max = best;
        out->token = static_cast<int32_t>(p.vocab_first + s_at[0]);
        out->sum_exp = static_cast<float>(total);
    }
}

}  // namespace

bool greedy_supported(const GreedyParams& p) { return p.rows >= 0 && p.cols > 0; }

void invoke_greedy(const GreedyParams& p, cudaStream_t stream) {
    if (p.rows == 0) return;
    launch_kernel(greedy_kernel, static_cast<unsigned>(p.rows), kThreads, 0, stream, p);
    TPS_CHECK_LAUNCH("greedy");
}

}  // namespace tps::cuda
