#include "step_workspace.h"

#include "attention.cuh"
#include "gemm.cuh"
#include "gemv.cuh"
#include "kernel_format.h"

#include "tpserve/engine/row_sampling.h"

#include <algorithm>
#include <limits>

namespace tps::cuda {

StepWorkspace step_workspace(const StepLimits& limits, int multiprocessors) {
    StepWorkspace ws;
    if (limits.max_tokens > kGemvMaxTokens) {
        for (const Weight* w : limits.matrices) {
            const auto format = kernel_format(w->type);
            if (!format || w->empty()) continue;
            GemmParams p;
            p.w = WeightRows{nullptr, *format, w->rows, w->cols, w->row_bytes};
            p.tokens = limits.max_tokens;
            ws.gemm = std::max(ws.gemm, gemm_workspace_bytes(p));
        }
    }
    if (limits.kv_heads > 0) {
        // sequences of any length: the split is then set by the card alone, and is at its largest
        constexpr int64_t kAnyLength = std::numeric_limits<int64_t>::max() / 2;
        AttentionParams p;
        p.heads = limits.heads;
        p.kv_heads = limits.kv_heads;
        p.head_dim = limits.head_dim;
        for (int64_t t = 1; t <= limits.max_tokens && t * limits.kv_heads < 2 * int64_t{multiprocessors}; ++t) {
            p.step.tokens = t;
            p.splits = attention_split(t, limits.kv_heads, kAnyLength, multiprocessors);
            ws.partial = std::max(ws.partial, attention_partial_floats(p) * 4);
        }
    }
    if (limits.sample_rows > 0) {
        ws.sampling = limits.sample_rows * static_cast<int64_t>(sizeof(RowSampling)) +
                      limits.sample_penalties * static_cast<int64_t>(sizeof(PenaltyEntry));
    }
    return ws;
}

}  // namespace tps::cuda
