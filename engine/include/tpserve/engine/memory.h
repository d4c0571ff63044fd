// The tagged allocator: every buffer the engine allocates is counted under one of the planner's
// categories, so what a rank holds can be set against what the plan predicted (`--verbose`,
// `tpserve check`, /v1/plan). Weights used in place from a mapped file are not allocations; the
// model reports them (LlamaWeights::mapped_bytes).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tps {

// The planner's categories: its activations are our activations and workspace (a GPU's step
// workspace, reserved for the largest step); its runtime, of what we allocate, is the cuBLAS
// workspace (the CUDA context and NCCL's buffers are not allocations of ours).
enum class MemoryTag : uint8_t { weights, kv_cache, activations, workspace, runtime };
inline constexpr size_t kMemoryTags = 5;
std::string_view memory_tag_name(MemoryTag tag) noexcept;

struct MemoryTotals {
    std::array<int64_t, kMemoryTags> current{};  // bytes held now, per tag
    std::array<int64_t, kMemoryTags> peak{};
    int64_t current_total() const noexcept;
};

// Process-wide counters (one rank per process).
class MemoryTracker {
public:
    static MemoryTracker& instance();
    void add(MemoryTag tag, int64_t bytes) noexcept;
    void sub(MemoryTag tag, int64_t bytes) noexcept;
    MemoryTotals totals() const noexcept;

private:
    std::array<std::atomic<int64_t>, kMemoryTags> current_{};
    std::array<std::atomic<int64_t>, kMemoryTags> peak_{};
};

// A host buffer, 64-byte aligned, counted under its tag while it lives. Zero-initialised.
class Buffer {
public:
    Buffer() = default;
    Buffer(int64_t bytes, MemoryTag tag);
    Buffer(Buffer&& o) noexcept;
    Buffer& operator=(Buffer&& o) noexcept;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    ~Buffer();

    void* data() const noexcept { return data_; }
    template <class T>
    T* as() const noexcept {
        return static_cast<T*>(data_);
    }
    int64_t bytes() const noexcept { return bytes_; }
    MemoryTag tag() const noexcept { return tag_; }

private:
    void release() noexcept;
    void* data_ = nullptr;
    int64_t bytes_ = 0;
    MemoryTag tag_ = MemoryTag::workspace;
};

}  // namespace tps
