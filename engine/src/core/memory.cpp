#include "tpserve/engine/memory.h"

#include "tpserve/common/check.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace tps {

std::string_view memory_tag_name(MemoryTag tag) noexcept {
    switch (tag) {
        case MemoryTag::weights: return "weights";
        case MemoryTag::kv_cache: return "kv_cache";
        case MemoryTag::activations: return "activations";
        case MemoryTag::workspace: return "workspace";
        case MemoryTag::runtime: return "runtime";
    }
    return "?";
}

int64_t MemoryTotals::current_total() const noexcept {
    int64_t t = 0;
    for (int64_t c : current) t += c;
    return t;
}

MemoryTracker& MemoryTracker::instance() {
    static MemoryTracker tracker;
    return tracker;
}

void MemoryTracker::add(MemoryTag tag, int64_t bytes) noexcept {
    const auto i = static_cast<size_t>(tag);
    const int64_t now = current_[i].fetch_add(bytes, std::memory_order_relaxed) + bytes;
    int64_t peak = peak_[i].load(std::memory_order_relaxed);
    while (now > peak && !peak_[i].compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
}

void MemoryTracker::sub(MemoryTag tag, int64_t bytes) noexcept {
    current_[static_cast<size_t>(tag)].fetch_sub(bytes, std::memory_order_relaxed);
}


MemoryTotals MemoryTracker::totals() const noexcept {
    MemoryTotals t;
    for (size_t i = 0; i < kMemoryTags; ++i) {
        t.current[i] = current_[i].load(std::memory_order_relaxed);
        t.peak[i] = peak_[i].load(std::memory_order_relaxed);
    }
    return t;
}

Buffer::Buffer(int64_t bytes, MemoryTag tag) : bytes_(bytes), tag_(tag) {
    TPS_CHECK(bytes >= 0, "negative buffer size {}", bytes);
    if (bytes == 0) return;
    const auto rounded = static_cast<size_t>((bytes + 63) / 64 * 64);
    data_ = std::aligned_alloc(64, rounded);
    if (!data_) {
        throw Error(fmt::format("out of host memory allocating {} bytes of {}", bytes, memory_tag_name(tag)));
    }
    std::memset(data_, 0, rounded);
    MemoryTracker::instance().add(tag_, bytes_);
}

Buffer::Buffer(Buffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_), tag_(o.tag_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
    if (this != &o) {
        release();
        data_ = o.data_;
        bytes_ = o.bytes_;
        tag_ = o.tag_;
        o.data_ = nullptr;
        o.bytes_ = 0;
    }
    return *this;
}

Buffer::~Buffer() { release(); }

void Buffer::release() noexcept {
    if (data_) {
        std::free(data_);
        MemoryTracker::instance().sub(tag_, bytes_);
        data_ = nullptr;
        bytes_ = 0;
    }
}

}  // namespace tps
