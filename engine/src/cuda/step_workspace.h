// The CUDA backend's step workspace: what its GEMM (x in 16 bits, and int8 or GGML rows expanded
// to bf16) and its split decode attention (partial softmaxes) will ask for over steps within a
// model's limits. CudaBackend::reserve takes it before the first step; the planner counts the
// same (tps::gpu_step_workspace), and a test holds the two to each other. Host code only.
#pragma once

#include "tpserve/engine/backend.h"

#include <cstdint>

namespace tps::cuda {

struct StepWorkspace {
    int64_t gemm = 0;      // bytes
    int64_t partial = 0;   // bytes
    int64_t sampling = 0;  // bytes
};

// The largest gemm_workspace_bytes of any of the matrices at limits.max_tokens (none when every
// step is a GEMV), the largest attention partial of any step of up to max_tokens tokens over
// sequences of any length, on a card of `multiprocessors`, and sample_rows' parameters and
// penalty list at the limits (none where the backend samples no rows).
StepWorkspace step_workspace(const StepLimits& limits, int multiprocessors);

}  // namespace tps::cuda
