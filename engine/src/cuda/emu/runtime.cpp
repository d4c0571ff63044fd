// The emulator's CUDA runtime: devices present only when TPS_CUDA_EMULATE is set (so a build made
// with the emulator answers "no device" to everything else that asks; its value, 1 to 16, is how
// many), device memory that is tracked host memory (one pool for them all), streams that run work
// as it is issued or record it while capturing, work that completes outside the device (the
// emulated NCCL's) holding back what follows it on its stream (queued, the caller going on, until
// a query or a wait gets past it), graphs that replay what was
// recorded, and the rules of stream capture a GPU enforces (no synchronising a capturing stream,
// no work on the legacy stream while a blocking stream captures).
#include "internal.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tpsemu {

struct Stream {
    bool blocking = true;
    bool capturing = false;
    bool invalidated = false;
    Graph* graph = nullptr;
};
struct Graph {
    std::vector<std::function<cudaError_t()>> nodes;
};
struct GraphExec {
    std::vector<std::function<cudaError_t()>> nodes;
};
struct Event {  // (guarded by g_mu)
    std::chrono::steady_clock::time_point at{};
    bool recorded = false;
    Stream* stream = nullptr;  // where it was last recorded
    uint64_t seq = 0;          // records issued: an earlier one still queued does not count
};

namespace {

thread_local cudaError_t t_last = cudaSuccess;
thread_local int t_device = 0;
std::atomic<int> g_sticky{cudaSuccess};

// Held while a thread polls or runs a stream's queued work (so no piece runs twice, and an owner's
// work is not dropped while it runs); taken before g_mu, never inside a piece of work.
std::mutex g_drain_mu;
std::mutex g_mu;  // guards what follows
std::map<uintptr_t, size_t> g_allocations;
size_t g_allocated = 0;
std::map<uintptr_t, size_t> g_pinned;  // cudaMallocHost's
std::vector<Stream*> g_capturing;
std::unordered_map<const void*, int> g_max_dynamic_smem;

// Work issued on a stream that completes outside the device, in issue order per stream (the
// legacy stream's under nullptr).
struct Pending {
    const void* owner;
    std::function<bool()> poll;
    uint64_t id = 0;
};
std::map<Stream*, std::deque<Pending>> g_pending;
uint64_t g_pending_ids = 0;

constexpr size_t kStaticSharedBytes = 48 << 10;  // without cudaFuncSetAttribute, as on a GPU
constexpr size_t kOptinSharedBytes = 227 << 10;  // sm_90's opt-in limit

// TPS_CUDA_EMULATE: unset, empty or 0 for none; a count of 1 to 16; anything else is one.
int device_count() {
    const char* v = std::getenv("TPS_CUDA_EMULATE");
    if (!v || !*v || std::strcmp(v, "0") == 0) return 0;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return *end == '\0' && n >= 1 && n <= 16 ? static_cast<int>(n) : 1;
}

bool device_present() { return device_count() > 0; }

// Polls `stream`'s pending work in order until it is all done, or (wait false) until a piece is
// not done yet; whether none is left. The poll runs without the lock: it may take a while.
bool drain(Stream* stream, bool wait) {
    for (;;) {
        {
            std::lock_guard drain_lock(g_drain_mu);
            std::function<bool()> poll;
            uint64_t id = 0;
            {
                std::lock_guard lock(g_mu);
                auto it = g_pending.find(stream);
                if (it == g_pending.end() || it->second.empty()) return true;
                poll = it->second.front().poll;
                id = it->second.front().id;
            }
            if (poll()) {
                std::lock_guard lock(g_mu);
                auto it = g_pending.find(stream);
                if (it != g_pending.end()) std::erase_if(it->second, [&](const Pending& p) { return p.id == id; });
                continue;
            }
        }
        if (!wait) return false;
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

// Before work on `stream`: its own pending work done; the legacy stream's also waits for every
// blocking stream's, as on a GPU.
void drain_before(Stream* stream) {
    drain(stream, true);
    if (stream) return;
    std::vector<Stream*> blocking;
    {
        std::lock_guard lock(g_mu);
        for (const auto& [s, work] : g_pending) {
            if (s && s->blocking && !work.empty()) blocking.push_back(s);
        }
    }
    for (Stream* s : blocking) drain(s, true);
}

size_t capacity() {
    const char* v = std::getenv("TPS_CUDA_EMULATE_MIB");
    const long long mib = v ? std::atoll(v) : 0;
    return static_cast<size_t>(mib > 0 ? mib : 2048) << 20;
}

cudaError_t ret(cudaError_t e) {
    if (e != cudaSuccess) t_last = e;
    return e;
}

// Every call starts here: no device, or a failed device, answers before anything is done.
cudaError_t gate() {
    if (!device_present()) return cudaErrorNoDevice;
    return static_cast<cudaError_t>(g_sticky.load());
}

bool valid_kind_range(const void* p, size_t bytes, bool device) {
    if (bytes == 0) return true;
    return device ? is_device_range(p, bytes) : !is_device_range(p, 1);
}

cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    if (bytes == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    bool ok = false;
    switch (kind) {
        case cudaMemcpyHostToDevice: ok = valid_kind_range(dst, bytes, true) && valid_kind_range(src, bytes, false); break;
        case cudaMemcpyDeviceToHost: ok = valid_kind_range(dst, bytes, false) && valid_kind_range(src, bytes, true); break;
        case cudaMemcpyDeviceToDevice: ok = valid_kind_range(dst, bytes, true) && valid_kind_range(src, bytes, true); break;
        case cudaMemcpyHostToHost: ok = true; break;
        case cudaMemcpyDefault:  // either side, but a device side wholly inside its allocation
            ok = (!is_device_range(dst, 1) || is_device_range(dst, bytes)) && (!is_device_range(src, 1) || is_device_range(src, bytes));
            break;
    }
    return ok ? cudaSuccess : cudaErrorInvalidValue;
}

// The device side of a recorded copy must still be allocated when the graph replays it.
cudaError_t copy_now(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    if (check_copy(dst, src, bytes, kind) != cudaSuccess) {
        return fail(cudaErrorIllegalAddress, "a copy in a replayed graph touches device memory that was freed");
    }
    if (bytes) std::memmove(dst, src, bytes);
    return cudaSuccess;
}

void invalidate_captures_locked() {
    for (Stream* s : g_capturing) s->invalidated = true;
}

}  // namespace

namespace {

bool in_range_locked(const std::map<uintptr_t, size_t>& ranges, const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = ranges.upper_bound(a);
    if (it == ranges.begin()) return false;
    --it;
    return a >= it->first && a - it->first + bytes <= it->second;
}

// Whether a copy's host side is pageable memory (not cudaMallocHost's).
bool pageable(const void* host, size_t bytes) {
    std::lock_guard lock(g_mu);
    return !in_range_locked(g_pinned, host, std::max<size_t>(bytes, 1));
}

// Every stream's work done (what cudaDeviceSynchronize, and a free, wait for).
void drain_all() {
    std::vector<Stream*> streams;
    {
        std::lock_guard lock(g_mu);
        for (const auto& [s, work] : g_pending) streams.push_back(s);
    }
    for (Stream* s : streams) drain(s, true);
}

}  // namespace

bool is_device_range(const void* p, size_t bytes) {
    std::lock_guard lock(g_mu);
    return in_range_locked(g_allocations, p, bytes);
}

void add_pending(cudaStream_t stream, const void* owner, std::function<bool()> poll) {
    std::lock_guard lock(g_mu);
    g_pending[stream].push_back(Pending{owner, std::move(poll), ++g_pending_ids});
}

void drop_pending(const void* owner) {
    std::lock_guard drain_lock(g_drain_mu);  // (not while another thread runs its poll)
    std::lock_guard lock(g_mu);
    for (auto& [s, work] : g_pending) std::erase_if(work, [&](const Pending& p) { return p.owner == owner; });
}

bool capturing(cudaStream_t stream) {
    std::lock_guard lock(g_mu);
    return stream && stream->capturing;
}

cudaError_t fail(cudaError_t e, const std::string& why) {
    std::fprintf(stderr, "tpserve CUDA emulator: %s\n", why.c_str());
    int expected = cudaSuccess;
    g_sticky.compare_exchange_strong(expected, e);
    return ret(e);
}

cudaError_t submit(cudaStream_t stream, std::function<cudaError_t()> op) {
    if (const cudaError_t e = gate()) return ret(e);
    {
        std::lock_guard lock(g_mu);
        if (stream && stream->capturing) {  // (a capture records: nothing runs now)
            if (!stream->invalidated) stream->graph->nodes.push_back(std::move(op));
            return cudaSuccess;
        }
        if (!stream && !g_capturing.empty()) {
            // the legacy stream waits for every blocking stream: work on it would join a capture
            bool blocking = false;
            for (Stream* s : g_capturing) blocking |= s->blocking;
            if (blocking) {
                invalidate_captures_locked();
                return ret(cudaErrorStreamCaptureImplicit);
            }
        }
    }
    if (!stream) {
        drain_before(stream);  // the legacy stream: synchronous, after every blocking stream's work
        return ret(op());
    }
    // behind work still outside the device: queued after it, and run when a query or a wait on
    // the stream gets past it (the caller goes on, as a GPU's does)
    if (!drain(stream, false)) {
        std::lock_guard lock(g_mu);
        g_pending[stream].push_back(Pending{nullptr,
                                            [op = std::move(op)] {
                                                op();  // (its failure is the device's: fail() is sticky)
                                                return true;
                                            },
                                            ++g_pending_ids});
        return cudaSuccess;
    }
    return ret(op());
}

void launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream, std::function<void()> body) {
    if (const cudaError_t e = gate()) {
        ret(e);
        return;
    }
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        ret(cudaErrorInvalidConfiguration);
        return;
    }
    size_t smem_limit = kStaticSharedBytes;
    {
        std::lock_guard lock(g_mu);
        const auto it = g_max_dynamic_smem.find(kernel);
        if (it != g_max_dynamic_smem.end()) smem_limit = static_cast<size_t>(it->second);
    }
    if (dynamic_smem > smem_limit) {
        ret(cudaErrorInvalidValue);
        return;
    }
    submit(stream, [grid, block, dynamic_smem, body = std::move(body)]() -> cudaError_t {
        const std::string why = run_grid(grid, block, dynamic_smem, body);
        if (why.empty()) return cudaSuccess;
        return fail(cudaErrorLaunchFailure, "kernel launch failed at " + why);
    });
}

cudaError_t func_set_attribute(const void* kernel, cudaFuncAttribute attr, int value) {
    if (const cudaError_t e = gate()) return ret(e);
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || static_cast<size_t>(value) > kOptinSharedBytes) {
        return ret(cudaErrorInvalidValue);
    }
    std::lock_guard lock(g_mu);
    g_max_dynamic_smem[kernel] = value;
    return cudaSuccess;
}

cudaError_t func_get_attributes(cudaFuncAttributes* attr, const void* kernel) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!attr || !kernel) return ret(cudaErrorInvalidValue);
    *attr = cudaFuncAttributes{};
    attr->maxThreadsPerBlock = 1024;
    std::lock_guard lock(g_mu);
    const auto it = g_max_dynamic_smem.find(kernel);
    attr->maxDynamicSharedSizeBytes = it == g_max_dynamic_smem.end() ? kStaticSharedBytes : static_cast<size_t>(it->second);
    return cudaSuccess;
}

}  // namespace tpsemu

using tpsemu::gate;
using tpsemu::ret;
using tpsemu::submit;

const char* cudaGetErrorName(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "cudaSuccess";
        case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
        case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
        case cudaErrorInitializationError: return "cudaErrorInitializationError";
        case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
        case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
        case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
        case cudaErrorIllegalState: return "cudaErrorIllegalState";
        case cudaErrorNoDevice: return "cudaErrorNoDevice";
        case cudaErrorNotReady: return "cudaErrorNotReady";
        case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
        case cudaErrorSystemDriverMismatch: return "cudaErrorSystemDriverMismatch";
        case cudaErrorCompatNotSupportedOnDevice: return "cudaErrorCompatNotSupportedOnDevice";
        case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
        case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
        case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
        case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
        case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
        case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        case cudaErrorInvalidDevice: return "invalid device ordinal";
        case cudaErrorInvalidResourceHandle: return "invalid resource handle";
        case cudaErrorNoDevice: return "no CUDA-capable device is detected (the emulator runs only when TPS_CUDA_EMULATE is set)";
        case cudaErrorNotReady: return "device not ready";
        case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
        case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
        case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
        case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
        case cudaErrorLaunchFailure: return "unspecified launch failure";
        default: return cudaGetErrorName(e);
    }
}

cudaError_t cudaGetLastError() {
    const cudaError_t e = tpsemu::t_last;
    tpsemu::t_last = static_cast<cudaError_t>(tpsemu::g_sticky.load());
    return e;
}

cudaError_t cudaPeekAtLastError() { return tpsemu::t_last; }

cudaError_t cudaGetDeviceCount(int* count) {
    if (!count) return ret(cudaErrorInvalidValue);
    *count = tpsemu::device_count();
    return *count > 0 ? cudaSuccess : ret(cudaErrorNoDevice);
}

cudaError_t cudaGetDevice(int* device) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!device) return ret(cudaErrorInvalidValue);
    *device = tpsemu::t_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (const cudaError_t e = gate()) return ret(e);
    if (device < 0 || device >= tpsemu::device_count()) return ret(cudaErrorInvalidDevice);
    tpsemu::t_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!prop) return ret(cudaErrorInvalidValue);
    if (device < 0 || device >= tpsemu::device_count()) return ret(cudaErrorInvalidDevice);
    *prop = cudaDeviceProp{};
    std::snprintf(prop->name, sizeof prop->name, "tpserve CUDA emulator");
    prop->totalGlobalMem = tpsemu::capacity();
    prop->sharedMemPerBlock = tpsemu::kStaticSharedBytes;
    prop->sharedMemPerBlockOptin = tpsemu::kOptinSharedBytes;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 4;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
    if (const cudaError_t e = gate()) return ret(e);
    {
        std::lock_guard lock(tpsemu::g_mu);
        if (!tpsemu::g_capturing.empty()) {
            tpsemu::invalidate_captures_locked();
            return ret(cudaErrorStreamCaptureUnsupported);
        }
    }
    tpsemu::drain_all();
    return cudaSuccess;
}

// Every allocation freed and a fault forgotten, as cudaDeviceReset destroys the context.
cudaError_t cudaDeviceReset() {
    if (!tpsemu::device_present()) return ret(cudaErrorNoDevice);
    std::lock_guard lock(tpsemu::g_mu);
    for (const auto& [p, bytes] : tpsemu::g_allocations) std::free(reinterpret_cast<void*>(p));
    tpsemu::g_allocations.clear();
    tpsemu::g_allocated = 0;
    tpsemu::g_max_dynamic_smem.clear();
    tpsemu::g_pending.clear();
    tpsemu::invalidate_captures_locked();
    tpsemu::g_sticky = cudaSuccess;
    tpsemu::t_last = cudaSuccess;
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int* can, int device, int peer) {
    if (const cudaError_t e = gate()) return ret(e);
    const int n = tpsemu::device_count();
    if (!can || device < 0 || device >= n || peer < 0 || peer >= n) return ret(cudaErrorInvalidDevice);
    *can = 0;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!free_bytes || !total_bytes) return ret(cudaErrorInvalidValue);
    std::lock_guard lock(tpsemu::g_mu);
    *total_bytes = tpsemu::capacity();
    *free_bytes = *total_bytes - std::min(*total_bytes, tpsemu::g_allocated);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!ptr) return ret(cudaErrorInvalidValue);
    *ptr = nullptr;
    const size_t rounded = (std::max<size_t>(bytes, 1) + 255) & ~size_t{255};
    std::lock_guard lock(tpsemu::g_mu);
    if (tpsemu::g_allocated + rounded > tpsemu::capacity()) return ret(cudaErrorMemoryAllocation);
    void* p = std::aligned_alloc(256, rounded);
    if (!p) return ret(cudaErrorMemoryAllocation);
    tpsemu::g_allocations[reinterpret_cast<uintptr_t>(p)] = bytes;  // the bytes asked for: past them is out of range
    tpsemu::g_allocated += rounded;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
    if (!ptr) return cudaSuccess;
    if (const cudaError_t e = gate()) return ret(e);
    tpsemu::drain_all();  // as on a GPU: work queued earlier may still use it
    std::lock_guard lock(tpsemu::g_mu);
    const auto it = tpsemu::g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == tpsemu::g_allocations.end()) return ret(cudaErrorInvalidValue);
    tpsemu::g_allocated -= (std::max<size_t>(it->second, 1) + 255) & ~size_t{255};
    tpsemu::g_allocations.erase(it);
    std::free(ptr);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!ptr) return ret(cudaErrorInvalidValue);
    *ptr = std::malloc(std::max<size_t>(bytes, 1));
    if (!*ptr) return ret(cudaErrorMemoryAllocation);
    std::lock_guard lock(tpsemu::g_mu);
    tpsemu::g_pinned[reinterpret_cast<uintptr_t>(*ptr)] = std::max<size_t>(bytes, 1);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
    if (!ptr) return cudaSuccess;
    if (tpsemu::device_present()) tpsemu::drain_all();  // queued copies may still read it
    std::lock_guard lock(tpsemu::g_mu);
    if (tpsemu::g_pinned.erase(reinterpret_cast<uintptr_t>(ptr)) == 0) return ret(cudaErrorInvalidValue);
    std::free(ptr);
    return cudaSuccess;
}

// A copy with a pageable host side first waits for the stream's earlier work, as the CUDA
// runtime may (it stages such copies through pinned memory of its own): so code that must not
// block behind a collective (a step's uploads) shows here that it uses pinned memory. Copies
// between device and pinned memory queue like kernels.
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
    if (const cudaError_t e = gate()) return ret(e);
    if (const cudaError_t e = tpsemu::check_copy(dst, src, bytes, kind)) return ret(e);
    const bool host_src = kind == cudaMemcpyHostToDevice || (kind == cudaMemcpyDefault && !tpsemu::is_device_range(src, 1));
    const bool host_dst = kind == cudaMemcpyDeviceToHost || (kind == cudaMemcpyDefault && !tpsemu::is_device_range(dst, 1));
    const bool waits = bytes > 0 && kind != cudaMemcpyHostToHost &&
                       ((host_src && tpsemu::pageable(src, bytes)) || (host_dst && tpsemu::pageable(dst, bytes)));
    if (waits && !tpsemu::capturing(stream)) tpsemu::drain_before(stream);
    return submit(stream, [=] { return tpsemu::copy_now(dst, src, bytes, kind); });
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
    return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
    if (const cudaError_t e = gate()) return ret(e);
    if (bytes && !tpsemu::is_device_range(dst, bytes)) return ret(cudaErrorInvalidValue);
    return submit(stream, [=]() -> cudaError_t {
        if (bytes && !tpsemu::is_device_range(dst, bytes)) {
            return tpsemu::fail(cudaErrorIllegalAddress, "a memset in a replayed graph touches device memory that was freed");
        }
        std::memset(dst, value, bytes);
        return cudaSuccess;
    });
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) { return cudaMemsetAsync(dst, value, bytes, nullptr); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!stream) return ret(cudaErrorInvalidValue);
    *stream = new tpsemu::Stream;
    (*stream)->blocking = (flags & cudaStreamNonBlocking) == 0;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (!stream) return ret(cudaErrorInvalidResourceHandle);
    tpsemu::drain(stream, true);  // a GPU finishes a destroyed stream's work
    std::lock_guard lock(tpsemu::g_mu);
    tpsemu::g_pending.erase(stream);
    std::erase(tpsemu::g_capturing, stream);
    delete stream->graph;
    delete stream;
    return cudaSuccess;
}

namespace tpsemu {
namespace {

// Waiting on a stream that captures is refused, and ends its capture (as on a GPU).
cudaError_t refuse_wait_while_capturing(cudaStream_t stream) {
    std::lock_guard lock(g_mu);
    if (!stream || !stream->capturing) return cudaSuccess;
    stream->invalidated = true;
    return ret(cudaErrorStreamCaptureUnsupported);
}

}  // namespace
}  // namespace tpsemu

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    if (const cudaError_t e = gate()) return ret(e);
    if (const cudaError_t e = tpsemu::refuse_wait_while_capturing(stream)) return e;
    tpsemu::drain_before(stream);  // what was queued behind work outside the device runs now
    return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
    if (const cudaError_t e = gate()) return ret(e);
    if (const cudaError_t e = tpsemu::refuse_wait_while_capturing(stream)) return e;
    return tpsemu::drain(stream, false) ? cudaSuccess : cudaErrorNotReady;  // (not ready is no error)
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!stream) return ret(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot capture
    std::lock_guard lock(tpsemu::g_mu);
    if (stream->capturing) return ret(cudaErrorIllegalState);
    stream->capturing = true;
    stream->invalidated = false;
    stream->graph = new tpsemu::Graph;
    tpsemu::g_capturing.push_back(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
    if (!stream || !graph) return ret(cudaErrorInvalidValue);
    *graph = nullptr;
    std::lock_guard lock(tpsemu::g_mu);
    if (!stream->capturing) return ret(cudaErrorIllegalState);
    stream->capturing = false;
    std::erase(tpsemu::g_capturing, stream);
    tpsemu::Graph* g = stream->graph;
    stream->graph = nullptr;
    if (stream->invalidated) {
        delete g;
        return ret(cudaErrorStreamCaptureInvalidated);
    }
    *graph = g;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!exec || !graph) return ret(cudaErrorInvalidValue);
    *exec = new tpsemu::GraphExec{graph->nodes};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    if (!exec) return ret(cudaErrorInvalidResourceHandle);
    return submit(stream, [exec]() -> cudaError_t {
        for (const auto& node : exec->nodes) {
            if (const cudaError_t e = node()) return e;
        }
        return cudaSuccess;
    });
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    delete exec;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!event) return ret(cudaErrorInvalidValue);
    *event = new tpsemu::Event;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    if (!event) return ret(cudaErrorInvalidResourceHandle);
    uint64_t seq = 0;  // (0 in a capture: a replay records whenever it runs)
    if (!tpsemu::capturing(stream)) {
        std::lock_guard lock(tpsemu::g_mu);
        seq = ++event->seq;
        event->recorded = false;  // until the stream gets there
        event->stream = stream;
    }
    return submit(stream, [event, seq]() -> cudaError_t {
        std::lock_guard lock(tpsemu::g_mu);
        if (seq == 0 || event->seq == seq) {  // a record issued since supersedes this one
            event->at = std::chrono::steady_clock::now();
            event->recorded = true;
        }
        return cudaSuccess;
    });
}

// (Both make progress on the event's stream: the emulator's queued work runs when asked about.)
cudaError_t cudaEventQuery(cudaEvent_t event) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!event) return ret(cudaErrorInvalidResourceHandle);
    tpsemu::Stream* stream = nullptr;
    {
        std::lock_guard lock(tpsemu::g_mu);
        stream = event->stream;
    }
    tpsemu::drain(stream, false);  // (a stream destroyed since is only compared, never read)
    std::lock_guard lock(tpsemu::g_mu);
    return event->recorded || !event->stream ? cudaSuccess : cudaErrorNotReady;  // (not ready is no error)
}

// Until the stream gets past the event's record, not past all its work (as on a GPU).
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!event) return ret(cudaErrorInvalidResourceHandle);
    for (;;) {
        tpsemu::Stream* stream = nullptr;
        {
            std::lock_guard lock(tpsemu::g_mu);
            if (event->recorded || !event->stream) return cudaSuccess;
            stream = event->stream;
        }
        if (tpsemu::drain(stream, false)) continue;  // (done: recorded now)
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
    if (const cudaError_t e = gate()) return ret(e);
    if (!ms || !start || !end) return ret(cudaErrorInvalidResourceHandle);
    std::lock_guard lock(tpsemu::g_mu);
    if (!start->recorded || !end->recorded) return ret(start->seq && end->seq ? cudaErrorNotReady : cudaErrorInvalidResourceHandle);
    *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
    return cudaSuccess;
}
