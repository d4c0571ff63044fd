// Greedy picks on the device: per row of logits (rows, cols) its maximum, the lowest column that
// holds it (plus vocab_first), and the sum of exp(logit - max), written to `out` as
// {float max; int32 token; float sum_exp} (tps::GreedyPick's layout).
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

struct GreedyParams {
    const float* logits = nullptr;
    int64_t rows = 0, cols = 0;
    int64_t vocab_first = 0;
    void* out = nullptr;  // rows x 12 bytes, device
};

bool greedy_supported(const GreedyParams& p);
void invoke_greedy(const GreedyParams& p, cudaStream_t stream);

}  // namespace tps::cuda
