// Device memory of the CUDA backend: CudaMemory (one cudaMalloc, counted under its tag), and
// Scratch, a buffer that grows to the largest size asked of it. Scratch buffers that recorded
// graphs point into share a ScratchPool: moving one of them makes those graphs stale (the pool's
// generation changes), and while a graph is being recorded the old memory is kept until the
// recording ends (cudaFree would synchronise the capturing stream). Likewise while collectives
// may be in flight on the stream (defer_frees): cudaFree would wait for them with no deadline.
#pragma once

#include "tpserve/engine/backend.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace tps::cuda {

class CudaMemory final : public DeviceMemory {
public:
    // tps::DeviceError naming the tag and the free memory when the device is full
    CudaMemory(int64_t bytes, MemoryTag tag);
    ~CudaMemory() override;
    CudaMemory(const CudaMemory&) = delete;
    CudaMemory& operator=(const CudaMemory&) = delete;
    void* data() noexcept override { return data_; }
    int64_t bytes() const noexcept override { return bytes_; }

private:
    void* data_ = nullptr;
    int64_t bytes_ = 0;
    MemoryTag tag_;
};

struct ScratchPool {
    uint64_t generation = 0;   // bumped whenever a tracked buffer moves
    bool recording = false;    // a graph is being captured: keep old memory in `retired`
    bool defer_frees = false;  // the same, while the stream may hold collectives (freed after a wait)
    std::vector<std::unique_ptr<CudaMemory>> retired;
};

class Scratch {
public:
    // `pool`: set for buffers graphs may point into
    explicit Scratch(MemoryTag tag, ScratchPool* pool = nullptr) : tag_(tag), pool_(pool) {}
    // at least `bytes` (growing by half again at least, so growth is rare)
    void* get(int64_t bytes);
    // at least `bytes`, growing to exactly that (a size known up front: CudaBackend::reserve)
    void reserve(int64_t bytes);

private:
    void grow_to(int64_t bytes);
    MemoryTag tag_;
    ScratchPool* pool_;
    std::unique_ptr<CudaMemory> mem_;
};

}  // namespace tps::cuda
