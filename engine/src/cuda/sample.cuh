// Sampling on the device, as row_sampling.h defines it: per row of logits (the whole vocabulary)
// the penalties, then greedy or temperature / top-k / top-p / min-p and the step's draw, and the
// chosen token's log-probability and the top alternatives, written as tps::SampledRow. The logits
// are rewritten in place by the penalties.
#pragma once

#include "tpserve/engine/row_sampling.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace tps::cuda {

struct SampleParams {
    float* logits = nullptr;             // rows x cols, device
    int64_t rows = 0, cols = 0;
    const RowSampling* how = nullptr;    // rows, device
    const PenaltyEntry* penalties = nullptr;  // device; each row's a range of distinct tokens
    SampledRow* out = nullptr;           // rows, device
};

// Any number of rows; a row of fewer than 2^24 tokens (so that a row's weights, each at most
// 2^40, add up below 2^64).
bool sample_supported(const SampleParams& p);
void invoke_sample(const SampleParams& p, cudaStream_t stream);

}  // namespace tps::cuda
