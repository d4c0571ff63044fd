// The CUDA emulator (engine/src/cuda/emu) holds kernels to a GPU's rules: barriers and warp
// intrinsics exchange values between threads, a missing barrier gives a wrong answer instead of
// the thread-order one, a collective that can never complete fails the launch, launch limits and
// capture rules fail as on a GPU, and graphs replay what they captured. Built in emulated builds
// only: on a real GPU the deadlock below would hang.
#include "common.cuh"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

namespace {

// Emulated device present, and a clean one after each test (a fault is sticky until a reset).
class CudaEmu : public ::testing::Test {
protected:
    void SetUp() override {
        ::setenv("TPS_CUDA_EMULATE", "1", 1);
        ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    }
    void TearDown() override { cudaDeviceReset(); }

    template <class T>
    T* device(size_t n) {
        void* p = nullptr;
        EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
        return static_cast<T*>(p);
    }
    template <class T>
    std::vector<T> host(const T* d, size_t n) {
        std::vector<T> out(n);
        EXPECT_EQ(cudaMemcpy(out.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }
};

using tps::cuda::launch_kernel;  // the engine's launch: the emulator's in this build

// The sum over a block through shared memory and barriers, one per block.
__global__ void block_sum_kernel(int* out) {
    __shared__ int part[256];
    part[threadIdx.x] = static_cast<int>(blockIdx.x * 1000 + threadIdx.x);
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

TEST_F(CudaEmu, BarriersOrderSharedMemoryAcrossABlock) {
    int* out = device<int>(5);
    launch_kernel(block_sum_kernel, 5, 256, 0, nullptr, out);
    ASSERT_EQ(cudaPeekAtLastError(), cudaSuccess);
    const auto got = host(out, 5);
    for (int b = 0; b < 5; ++b) EXPECT_EQ(got[static_cast<size_t>(b)], b * 1000 * 256 + 255 * 256 / 2);
}

// Each thread reads its neighbour's slot of dynamic shared memory, with or without a barrier
// between the writes and the reads.
template <bool Barrier>
__global__ void neighbour_kernel(int* out) {
    int* slot = tps_dynamic_shared<int>();
    slot[threadIdx.x] = static_cast<int>(threadIdx.x);
    if (Barrier) __syncthreads();
    out[threadIdx.x] = slot[(threadIdx.x + 1) % blockDim.x];
}

TEST_F(CudaEmu, AMissingBarrierGivesAWrongAnswerNotTheThreadOrderOne) {
    int* out = device<int>(128);
    launch_kernel(neighbour_kernel<true>, 1, 128, 128 * sizeof(int), nullptr, out);
    auto got = host(out, 128);
    for (int t = 0; t < 128; ++t) EXPECT_EQ(got[static_cast<size_t>(t)], (t + 1) % 128);
    // without the barrier, threads run in a shuffled order: some read a slot not yet written
    // (NaN bytes, -1 as an int); in thread order every read but the last would be "right"
    launch_kernel(neighbour_kernel<false>, 1, 128, 128 * sizeof(int), nullptr, out);
    got = host(out, 128);
    int unwritten = 0;
    for (int v : got) unwritten += v == -1;
    EXPECT_GT(unwritten, 16);
    EXPECT_LT(unwritten, 112);
}

// Warp intrinsics over a block of 64 threads (two warps): each lane writes what it got.
__global__ void warp_kernel(int* out) {
    const int lane = static_cast<int>(threadIdx.x % 32);
    const int t = static_cast<int>(threadIdx.x);
    out[t * 4 + 0] = __shfl_xor_sync(0xffffffffu, t * 10, 1);
    out[t * 4 + 1] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 2));
    out[t * 4 + 2] = static_cast<int>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(lane)));
    out[t * 4 + 3] = static_cast<int>(__match_any_sync(0xffffffffu, lane % 4));
}

TEST_F(CudaEmu, WarpIntrinsicsExchangeWithinAWarp) {
    int* out = device<int>(64 * 4);
    launch_kernel(warp_kernel, 1, 64, 0, nullptr, out);
    ASSERT_EQ(cudaPeekAtLastError(), cudaSuccess);
    const auto got = host(out, 64 * 4);
    for (int t = 0; t < 64; ++t) {
        const auto at = [&](int k) { return static_cast<unsigned>(got[static_cast<size_t>(t * 4 + k)]); };
        EXPECT_EQ(at(0), static_cast<unsigned>((t ^ 1) * 10));
        EXPECT_EQ(at(1), 0xAAAAAAAAu);
        EXPECT_EQ(at(2), 31u * 32u / 2u);
        EXPECT_EQ(at(3), 0x11111111u << (t % 4));
    }
}

// warp_sum / warp_max (common.cuh), one collective in this build, against the five shuffles they
// stand for: the same float operations in the same order, so equal to the bit; and a lane that
// returned before one fails the launch as a shuffle would.
__global__ void warp_reduce_kernel(const float* x, float* out) {
    const float v = x[threadIdx.x];
    float s = v, m = v;
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    }
    out[threadIdx.x * 4 + 0] = tps::cuda::warp_sum(v);
    out[threadIdx.x * 4 + 1] = s;
    out[threadIdx.x * 4 + 2] = tps::cuda::warp_max(v);
    out[threadIdx.x * 4 + 3] = m;
}

__global__ void early_return_sum_kernel(float* out) {
    if (threadIdx.x == 7) return;
    out[threadIdx.x] = tps::cuda::warp_sum(1.0f);
}

TEST_F(CudaEmu, WarpReductionsEqualTheirShufflesToTheBit) {
    std::vector<float> x(64);
    // magnitudes whose sum depends on the order of the additions (1 is lost next to 1e8)
    for (size_t i = 0; i < x.size(); ++i) x[i] = i % 32 == 0 ? 1e8f : i % 32 == 1 ? -1e8f : 1.0f / static_cast<float>(i + 3);
    float* dx = device<float>(64);
    float* out = device<float>(64 * 4);
    ASSERT_EQ(cudaMemcpy(dx, x.data(), 64 * 4, cudaMemcpyHostToDevice), cudaSuccess);
    launch_kernel(warp_reduce_kernel, 1, 64, 0, nullptr, dx, out);
    ASSERT_EQ(cudaPeekAtLastError(), cudaSuccess);
    const auto got = host(out, 64 * 4);
    for (size_t t = 0; t < 64; ++t) {
        EXPECT_EQ(std::memcmp(&got[t * 4], &got[t * 4 + 1], 4), 0) << "sum, thread " << t;
        EXPECT_EQ(std::memcmp(&got[t * 4 + 2], &got[t * 4 + 3], 4), 0) << "max, thread " << t;
        EXPECT_EQ(got[t * 4 + 2], got[(t / 32) * 32 * 4 + 2]) << "every lane gets the warp's max";
    }
    launch_kernel(early_return_sum_kernel, 1, 32, 0, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
}

// Lane 5 returns before a full-warp shuffle: it can never complete.
__global__ void deserter_kernel(int* out) {
    if (threadIdx.x == 5) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 4);
}

TEST_F(CudaEmu, ACollectiveThatCanNeverCompleteFailsTheLaunchAndTheDevice) {
    int* out = device<int>(32);
    launch_kernel(deserter_kernel, 1, 32, 0, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    // sticky, as a fault on a GPU: every later call fails until the device is reset
    EXPECT_EQ(cudaMemset(out, 0, 4), cudaErrorLaunchFailure);
    ASSERT_EQ(cudaDeviceReset(), cudaSuccess);
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&out), 4), cudaSuccess);
}

TEST_F(CudaEmu, LaunchLimitsFailAsOnAGpu) {
    int* out = device<int>(2048);
    launch_kernel(neighbour_kernel<true>, 1, 1025, 0, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    launch_kernel(neighbour_kernel<true>, dim3(1, 65536), 32, 0, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
    // past 48 KiB of dynamic shared memory only with the kernel's opt-in
    launch_kernel(neighbour_kernel<true>, 1, 32, 64 << 10, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
    ASSERT_EQ(cudaFuncSetAttribute(neighbour_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10), cudaSuccess);
    launch_kernel(neighbour_kernel<true>, 1, 32, 64 << 10, nullptr, out);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST_F(CudaEmu, DeviceMemoryIsBoundedAndCopiesStayInsideIt) {
    void* p = nullptr;
    ASSERT_EQ(cudaMalloc(&p, 64), cudaSuccess);
    std::vector<char> h(100, 1);
    EXPECT_EQ(cudaMemcpy(p, h.data(), 100, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // past the end
    EXPECT_EQ(cudaMemcpy(h.data(), p, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // sides swapped
    EXPECT_EQ(cudaMemcpy(p, h.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
    size_t free_b = 0, total_b = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_b, &total_b), cudaSuccess);
    void* big = nullptr;
    EXPECT_EQ(cudaMalloc(&big, total_b), cudaErrorMemoryAllocation);
    EXPECT_EQ(cudaGetLastError(), cudaErrorMemoryAllocation);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky
    EXPECT_EQ(cudaFree(h.data()), cudaErrorInvalidValue);
}

__global__ void add_kernel(int* x, int k) { x[threadIdx.x] += k; }

TEST_F(CudaEmu, AGraphReplaysWhatItCapturedArgumentsByValue) {
    int* x = device<int>(32);
    ASSERT_EQ(cudaMemset(x, 0, 32 * sizeof(int)), cudaSuccess);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    int k = 3;
    launch_kernel(add_kernel, 1, 32, 0, s, x, k);
    k = 100;  // after capture: the graph keeps 3
    // read on a non-blocking stream (the legacy one may not run while a blocking stream captures)
    cudaStream_t side = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
    int first = -1;
    ASSERT_EQ(cudaMemcpyAsync(&first, x, sizeof first, cudaMemcpyDeviceToHost, side), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(side), cudaSuccess);
    cudaStreamDestroy(side);
    EXPECT_EQ(first, 0) << "captured work ran at capture";
    cudaGraph_t g = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&exec, g, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(host(x, 32)[31], 6);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
}

TEST_F(CudaEmu, CaptureRulesInvalidateTheCapture) {
    int* x = device<int>(4);
    cudaStream_t s = nullptr;
    ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
    cudaGraph_t g = nullptr;
    // the legacy stream would wait on the capturing blocking stream
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    EXPECT_EQ(cudaMemset(x, 0, 16), cudaErrorStreamCaptureImplicit);
    EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(g, nullptr);
    // synchronising the capturing stream
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    // a non-blocking stream's copies run while another stream captures (relaxed mode)
    cudaStream_t side = nullptr;
    ASSERT_EQ(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), cudaSuccess);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
    const int v[4] = {1, 2, 3, 4};
    EXPECT_EQ(cudaMemcpyAsync(x, v, sizeof v, cudaMemcpyHostToDevice, side), cudaSuccess);
    ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
    cudaGraphDestroy(g);
    EXPECT_EQ(host(x, 4)[3], 4);
    cudaStreamDestroy(side);
    cudaStreamDestroy(s);
}

TEST_F(CudaEmu, WithoutTheVariableThereIsNoDevice) {
    ::unsetenv("TPS_CUDA_EMULATE");
    int n = -1;
    EXPECT_EQ(cudaGetDeviceCount(&n), cudaErrorNoDevice);
    EXPECT_EQ(n, 0);
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, 4), cudaErrorNoDevice);
    ::setenv("TPS_CUDA_EMULATE", "1", 1);
    EXPECT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
    EXPECT_EQ(n, 1);
}

}  // namespace
