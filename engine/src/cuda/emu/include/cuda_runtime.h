// The CUDA C++ device language as the tpserve CUDA emulator compiles it with a host compiler:
// kernels are plain functions, run once per CUDA thread, each thread a fiber of the emulator's
// executor; the built-in indices, shared memory, barriers and warp intrinsics the kernels use
// are answered by it (engine/src/cuda/emu/README.md). Only what engine/src/cuda uses is here.
#pragma once

#include "cuda_runtime_api.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A block's threads are fibers of one host thread, and blocks run one after another: a variable
// shared by a block's threads is a static of the host thread.
#define __shared__ static thread_local

namespace tpsemu {

// What one CUDA thread sees: its indices, and its block's dynamic shared memory.
struct ThreadCtx {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
    unsigned char* dynamic_smem = nullptr;
};
const ThreadCtx& ctx();

// Block and warp collectives: the calling thread waits until every thread taking part arrives.
void syncthreads();
int syncthreads_count(int predicate);
// butterfly_sum / butterfly_max: the whole warp's xor-shuffle reduction of a float (v += or
// v = fmaxf(v, __shfl_xor_sync(full, v, o)) for o = 16, 8, 4, 2, 1), the same float operations
// in the same order as those five shuffles, as one collective: common.cuh's warp_sum and
// warp_max, which every kernel's epilogue calls, switch fibers once instead of five times.
enum class WarpOp { shfl_xor, ballot, reduce_add, match_any, butterfly_sum, butterfly_max };
uint64_t warp_collective(unsigned mask, WarpOp op, uint64_t value, int arg);
// A misuse a GPU would leave undefined: the launch fails, naming it.
[[noreturn]] void fault(const char* what);

// A kernel launch: `body` runs once per thread of grid x block (or is recorded, when `stream`
// captures a graph). Errors are the runtime's (cudaPeekAtLastError).
void launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream,
            std::function<void()> body);

template <class T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace tpsemu

#define threadIdx (::tpsemu::ctx().thread_idx)
#define blockIdx (::tpsemu::ctx().block_idx)
#define blockDim (::tpsemu::ctx().block_dim)
#define gridDim (::tpsemu::ctx().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::tpsemu::syncthreads(); }
inline int __syncthreads_or(int p) { return ::tpsemu::syncthreads_count(p != 0) != 0; }
inline int __syncthreads_and(int p) { return ::tpsemu::syncthreads_count(p == 0) == 0; }
inline int __syncthreads_count(int p) { return ::tpsemu::syncthreads_count(p != 0); }
// every lane of `mask` arrives (a ballot nobody reads): the warp's barrier
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)::tpsemu::warp_collective(mask, ::tpsemu::WarpOp::ballot, 0, 0);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    if (width != warpSize) ::tpsemu::fault("__shfl_xor_sync with a width other than 32 is not emulated");
    return ::tpsemu::from_bits<T>(::tpsemu::warp_collective(mask, ::tpsemu::WarpOp::shfl_xor, ::tpsemu::to_bits(v), lane_mask));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return static_cast<unsigned>(::tpsemu::warp_collective(mask, ::tpsemu::WarpOp::ballot, predicate != 0, 0));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) {
    return static_cast<unsigned>(::tpsemu::warp_collective(mask, ::tpsemu::WarpOp::reduce_add, v, 0));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T v) {
    return static_cast<unsigned>(::tpsemu::warp_collective(mask, ::tpsemu::WarpOp::match_any, ::tpsemu::to_bits(v), 0));
}

// Threads of a block never run at once (they switch only at a barrier), so these are atomic.
template <class T>
T atomicAdd(T* address, T v) {
    const T old = *address;
    *address = old + v;
    return old;
}

template <class T>
T __ldg(const T* p) {
    return *p;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
// byte k of the result is byte (s >> 4k) & 7 of the 8 bytes y:x (x the low four), as PTX prmt's
// default mode (the sign-replicating bit 3 of each selector nibble is not modelled: refused)
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t both = (uint64_t{y} << 32) | x;
    unsigned out = 0;
    for (int k = 0; k < 4; ++k) {
        const unsigned sel = (s >> (4 * k)) & 0xfu;
        if (sel & 8u) ::tpsemu::fault("__byte_perm: sign-replicating selectors are not emulated");
        out |= static_cast<unsigned>((both >> (8 * sel)) & 0xffu) << (8 * k);
    }
    return out;
}
inline float __uint_as_float(unsigned u) { return ::tpsemu::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return static_cast<unsigned>(::tpsemu::to_bits(f)); }
inline float __int_as_float(int i) { return ::tpsemu::from_bits<float>(static_cast<unsigned>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(::tpsemu::to_bits(f)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::isfinite;
using std::isinf;
using std::isnan;

// A block's dynamic shared memory (what `extern __shared__ T name[]` names in CUDA).
template <class T>
T* tps_dynamic_shared() {
    return reinterpret_cast<T*>(::tpsemu::ctx().dynamic_smem);
}
