// Grid-stride loops: these ops move a few MB per step at most.
#include "common.cuh"
#include "cuda_check.h"
#include "elementwise.cuh"

#include <algorithm>

namespace tps::cuda {
namespace {

unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(ceil_div(n, 256), 65535)); }

__global__ void add_kernel(float* x, const float* y, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) x[i] += y[i];
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t n, int64_t cols) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) y[i] += b[i % cols];
}

__global__ void swiglu_kernel(const float* gate, const float* up, float* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int64_t cols, float* out) {
    const float* src = x + static_cast<int64_t>(rows[blockIdx.x]) * cols;
    float* dst = out + blockIdx.x * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

__global__ void add_rows_scaled_kernel(const float* y, const int32_t* rows, const float* scales, int64_t cols,
                                       float* out) {
    const float* src = y + blockIdx.x * cols;
    float* dst = out + static_cast<int64_t>(rows[blockIdx.x]) * cols;
    const float s = scales[blockIdx.x];
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] += s * src[c];
}

__global__ void to_bf16_kernel(const float* x, __nv_bfloat16* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
        out[i] = __float2bfloat16_rn(x[i]);
    }
}

__global__ void to_f16_kernel(const float* x, __half* out, int64_t n) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
        out[i] = __float2half_rn(fminf(fmaxf(x[i], -65504.0f), 65504.0f));
    }
}

}  // namespace

std::string kernels_unavailable(int device) {
    int current = 0;
    if (cudaGetDevice(&current) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
        cudaGetLastError();
        return "CUDA device " + std::to_string(device) + " cannot be selected";
    }
    cudaFuncAttributes attr{};
    const cudaError_t e = cudaFuncGetAttributes(&attr, add_kernel);
    cudaSetDevice(current);
    if (e == cudaSuccess) return {};
    cudaGetLastError();
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, device);
    return std::string("this build has no kernels for ") + prop.name + " (sm_" + std::to_string(prop.major * 10 + prop.minor) +
           "): " + cudaGetErrorString(e) + "; rebuild with -DTPS_CUDA_ARCHITECTURES=native";
}

void invoke_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    launch_kernel(add_kernel, grid_for(n), 256, 0, stream, x, y, n);
    TPS_CHECK_LAUNCH("add");
}

void invoke_add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream) {
    if (rows * cols == 0) return;
    launch_kernel(add_bias_kernel, grid_for(rows * cols), 256, 0, stream, y, b, rows * cols, cols);
    TPS_CHECK_LAUNCH("add_bias");
}

void invoke_swiglu(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    launch_kernel(swiglu_kernel, grid_for(n), 256, 0, stream, gate, up, out, n);
    TPS_CHECK_LAUNCH("swiglu");
}

void invoke_gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out,
                        cudaStream_t stream) {
    if (n_rows == 0) return;
    launch_kernel(gather_rows_kernel, static_cast<unsigned>(n_rows), 256, 0, stream, x, rows, cols, out);
    TPS_CHECK_LAUNCH("gather_rows");
}

void invoke_add_rows_scaled(const float* y, const int32_t* rows, const float* scales, int64_t n_rows, int64_t cols,
                            float* out, cudaStream_t stream) {
    if (n_rows == 0) return;
    launch_kernel(add_rows_scaled_kernel, static_cast<unsigned>(n_rows), 256, 0, stream, y, rows, scales, cols, out);
    TPS_CHECK_LAUNCH("add_rows_scaled");
}

void invoke_to_bf16(const float* x, void* out, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    launch_kernel(to_bf16_kernel, grid_for(n), 256, 0, stream, x, static_cast<__nv_bfloat16*>(out), n);
    TPS_CHECK_LAUNCH("to_bf16");
}

void invoke_to_f16(const float* x, void* out, int64_t n, cudaStream_t stream) {
    if (n == 0) return;
    launch_kernel(to_f16_kernel, grid_for(n), 256, 0, stream, x, static_cast<__half*>(out), n);
    TPS_CHECK_LAUNCH("to_f16");
}

}  // namespace tps::cuda
