// What the emulator's parts share (engine/src/cuda/emu/README.md): the executor that runs a
// grid, and the runtime's stream order, device memory and errors, which cuBLAS uses too.
#pragma once

#include "cuda_runtime.h"

#include <functional>
#include <string>

namespace tpsemu {

// Runs `body` once for every thread of grid x block, blocks one after another; an empty string,
// or what went wrong (a deadlock at a barrier, a warp intrinsic's misuse).
std::string run_grid(dim3 grid, dim3 block, size_t dynamic_smem, const std::function<void()>& body);

// Issues `op` on `stream`: run now, queued behind the stream's pending work (below) while it has
// some, or recorded when the stream captures a graph. The returned error is the call's; an error
// `op` returns when it runs fails the launch (sticky, as a fault on a GPU is).
cudaError_t submit(cudaStream_t stream, std::function<cudaError_t()> op);

// Work on `stream` that completes outside the emulated device (the emulated NCCL's transfers),
// issued by `owner`: `poll` does what it can and says whether the work is done. Until it is,
// cudaStreamQuery answers not ready, work issued on the stream after it queues behind it (the
// caller going on), and a wait for the stream polls it to the end, as a GPU's stream order holds
// them back. drop_pending forgets the work of an owner that goes away.
void add_pending(cudaStream_t stream, const void* owner, std::function<bool()> poll);
void drop_pending(const void* owner);
bool capturing(cudaStream_t stream);

// Whether [p, p + bytes) lies inside one live device allocation.
bool is_device_range(const void* p, size_t bytes);

// Marks the device failed: every later call returns `e` (as after a kernel fault on a GPU); `why`
// goes to stderr, since a GPU's faults carry no message either.
cudaError_t fail(cudaError_t e, const std::string& why);

}  // namespace tpsemu
