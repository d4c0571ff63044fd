// What the CUDA tests share: the skip when no GPU is usable, device copies of host data with
// outputs poisoned (NaN bytes) before each run so an element a kernel fails to write is caught,
// and the comparison of whole outputs.
#pragma once

#include "support/hf_reference.h"
#include "tpserve/engine/backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#if TPS_HAS_CUDA
#include <cuda_runtime_api.h>
#endif

namespace tps::testing {

// The CUDA backend on device 0, or a skip naming why there is none.
#define TPS_REQUIRE_CUDA(backend)                                                           \
    do {                                                                                    \
        const std::string tps_why_ = ::tps::cuda_backend_unavailable(0);                    \
        if (!tps_why_.empty()) GTEST_SKIP() << "no usable GPU: " << tps_why_;              \
        backend = ::tps::make_cuda_backend(0);                                              \
    } while (0)

// Whole outputs compared as the engine tests compare rows (support/hf_reference.h): the largest
// |ours - ref| within `bound` of max(1, max |ref|); an unwritten (NaN) element fails.
inline ::testing::AssertionResult within(const std::vector<float>& ours, const std::vector<float>& ref, double bound) {
    if (ours.size() != ref.size()) return ::testing::AssertionFailure() << ours.size() << " values for " << ref.size();
    return row_close(ours.data(), ref.data(), static_cast<int64_t>(ref.size()), static_cast<float>(bound));
}

#if TPS_HAS_CUDA
// An f32 tensor in device memory, filled from host values or poisoned.
struct DeviceTensor {
    std::unique_ptr<DeviceMemory> mem;
    Tensor t;

    DeviceTensor(Backend& gpu, int64_t rows, int64_t cols) {
        mem = gpu.allocate(std::max<int64_t>(rows * cols * 4, 4), MemoryTag::activations);
        t = Tensor{mem->data(), DType::f32, rows, cols};
        poison();
    }
    DeviceTensor(Backend& gpu, const std::vector<float>& host, int64_t rows, int64_t cols) : DeviceTensor(gpu, rows, cols) {
        EXPECT_EQ(cudaMemcpy(t.data, host.data(), host.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    }
    void poison() { EXPECT_EQ(cudaMemset(t.data, 0xFF, static_cast<size_t>(t.rows * t.cols) * 4), cudaSuccess); }
    std::vector<float> host() const {
        std::vector<float> out(static_cast<size_t>(t.rows * t.cols));
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(out.data(), t.data, out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        return out;
    }
};
#endif

}  // namespace tps::testing
