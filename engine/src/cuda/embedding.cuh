// Embedding lookup: out (n, cols) f32 = rows ids[i] - vocab_first of a table in any weight format;
// ids outside [0, rows) give zeros (the vocabulary-parallel embedding sums partial rows).
#pragma once

#include "formats.h"

#include <cuda_runtime_api.h>

namespace tps::cuda {

struct EmbeddingParams {
    WeightRows table;
    int64_t vocab_first = 0;
    const int32_t* ids = nullptr;  // n, device
    int64_t n = 0;
    float* out = nullptr;  // n x cols, device
};

bool embedding_supported(const EmbeddingParams& p);
void invoke_embedding(const EmbeddingParams& p, cudaStream_t stream);

}  // namespace tps::cuda
