// Device memory of the CUDA backend (device_memory.h).
#include "device_memory.h"

#include "cuda_check.h"

#include "tpserve/common/check.h"

#include <algorithm>

namespace tps::cuda {

CudaMemory::CudaMemory(int64_t bytes, MemoryTag tag) : bytes_(bytes), tag_(tag) {
    if (bytes_ > 0) {
        const cudaError_t e = cudaMalloc(&data_, static_cast<size_t>(bytes_));
        if (e == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            size_t free_b = 0, total_b = 0;
            cudaMemGetInfo(&free_b, &total_b);
            throw DeviceError(fmt::format("CUDA: out of device memory allocating {:.1f} MiB for {} ({:.1f} MiB free of "
                                          "{:.1f} MiB){}",
                                          static_cast<double>(bytes_) / 1048576.0, memory_tag_name(tag_),
                                          static_cast<double>(free_b) / 1048576.0,
                                          static_cast<double>(total_b) / 1048576.0, detail::context_suffix()));
        }
        TPS_CHECK_CUDA(e);
    }
    MemoryTracker::instance().add(tag_, bytes_);
}

CudaMemory::~CudaMemory() {
    if (data_) cudaFree(data_);  // a failure here has nowhere to go; the context is going away
    MemoryTracker::instance().sub(tag_, bytes_);
}

void* Scratch::get(int64_t bytes) {
    if (!mem_ || mem_->bytes() < bytes) grow_to(std::max(bytes, mem_ ? mem_->bytes() + mem_->bytes() / 2 : 0));
    return mem_->data();
}

void Scratch::reserve(int64_t bytes) {
    if (!mem_ || mem_->bytes() < bytes) grow_to(bytes);
}

void Scratch::grow_to(int64_t bytes) {
    if (pool_) ++pool_->generation;  // first: graphs reading the old memory are stale even if this throws
    if (pool_ && (pool_->recording || pool_->defer_frees) && mem_) {
        pool_->retired.push_back(std::move(mem_));
    } else {
        mem_.reset();
    }
    mem_ = std::make_unique<CudaMemory>(std::max(bytes, int64_t{256}), tag_);
}

}  // namespace tps::cuda
