// Sampling one row of logits, defined once for every backend: the host computes it in
// sample_row() (engine/src/model/row_sampling.cpp), a GPU in a kernel (engine/src/cuda/sample.cu),
// so a step that samples on the device moves a few bytes per sequence instead of its logits row.
//
// The definition, in the order transformers' logits processors and OpenAI's penalties apply:
//   1. penalties: each PenaltyEntry rewrites its token's logit (the repetition factor, then minus
//      `subtract`); log-probabilities are the log-softmax of these logits.
//   2. temperature 0: the first maximum. Otherwise candidates in sorted order (logit descending,
//      token ascending on ties), each with the weight W = floor(expf((l - max) / T) * 2^40), an
//      integer so that sums do not depend on their order (a GPU adds them in any order).
//   3. the kept prefix is the shortest of: top_k tokens; the tokens up to the one where the
//      running weight first reaches ceil(top_p * S) (S: the weight of the top_k prefix); the
//      tokens with W >= min_p * 2^40 (probability at least min_p times the most likely's).
//   4. the draw: r = floor(u * M) (M: the kept prefix's weight, u in [0, 1) from the sequence's
//      seeded generator), and the token where the running weight first exceeds r.
// Only the rounding of expf differs between a host and a device, which moves a weight by one
// unit in 2^40: the same seed gives the same tokens on either.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TPS_HOST_DEVICE __host__ __device__
#else
#define TPS_HOST_DEVICE
#endif

namespace tps {

// Rewrites one token's logit: l > 0 ? l / repetition : l * repetition, then l -= subtract.
struct PenaltyEntry {
    int32_t token = 0;
    float repetition = 1.0f;  // 1: no repetition penalty
    float subtract = 0.0f;    // presence + frequency * count
};

// How one row is sampled (the parameters of tps::SamplingParams that act on one step, and the
// step's draw).
struct RowSampling {
    float temperature = 1.0f;  // 0: the first maximum
    int32_t top_k = 0;         // 0: off
    float top_p = 1.0f;        // 1: off
    float min_p = 0.0f;        // 0: off
    int32_t top_logprobs = 0;  // at most kMaxTopLogprobs
    double u = 0.0;            // the draw, in [0, 1)
    int32_t penalties_first = 0;  // this row's entries in the step's penalty list
    int32_t penalties_count = 0;
};

inline constexpr int kMaxTopLogprobs = 20;

// A row's result as a device writes it (fixed size, no pointers).
struct SampledRow {
    enum Status : int32_t { ok = 0, nan_logits = 1, no_finite_max = 2, lost_token = 3 };
    int32_t token = 0;
    float logprob = 0.0f;
    int32_t status = ok;
    int32_t n_top = 0;
    int32_t top_token[kMaxTopLogprobs] = {};
    float top_logprob[kMaxTopLogprobs] = {};
};

namespace sampling {

inline constexpr double kWeightScale = 1099511627776.0;  // 2^40

// A token's weight: floor(expf((l - max) / T) * 2^40); 2^40 for the maximum, 0 for -inf.
TPS_HOST_DEVICE inline uint64_t weight_from(float e) { return static_cast<uint64_t>(static_cast<double>(e) * kWeightScale); }

// The weight the running sum must reach for top_p: ceil(top_p * S), at least 1.
TPS_HOST_DEVICE inline uint64_t top_p_target(float top_p, uint64_t s) {
    const double t = static_cast<double>(top_p) * static_cast<double>(s);
    uint64_t v = static_cast<uint64_t>(t);
    if (static_cast<double>(v) < t) ++v;
    return v < 1 ? 1 : v;
}

// Whether a weight passes min_p (W >= min_p * 2^40, exact in double).
TPS_HOST_DEVICE inline bool passes_min_p(uint64_t w, float min_p) {
    return static_cast<double>(w) >= static_cast<double>(min_p) * kWeightScale;
}

// The draw's place in a prefix of weight m: floor(u * m), below m.
TPS_HOST_DEVICE inline uint64_t draw_target(double u, uint64_t m) {
    uint64_t r = static_cast<uint64_t>(u * static_cast<double>(m));
    return r >= m ? m - 1 : r;
}

// The logit a PenaltyEntry leaves.
TPS_HOST_DEVICE inline float penalised(float l, const PenaltyEntry& p) {
    if (p.repetition != 1.0f) l = l > 0 ? l / p.repetition : l * p.repetition;
    return l - p.subtract;
}

}  // namespace sampling
}  // namespace tps
