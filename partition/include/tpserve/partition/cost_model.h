// The cost model: a decode step of a stage takes, per layer, the larger of (bytes read /
// effective bandwidth) and (FLOPs / effective compute), plus two all-reduces per layer inside a
// tensor-parallel group, plus a hand-over of activations to the next stage. Pipeline throughput
// assumes the batch is split into one micro-batch per stage, all in flight. Prefill likewise for
// one prompt. Constants and their reasoning: docs/planner.md, "Cost model".
#pragma once

#include "tpserve/partition/model.h"
#include "tpserve/partition/plan.h"

namespace tps {

// Fractions of the data-sheet bandwidth and compute a well-written kernel reaches. For GPUs these
// are the CUDA backend's targets (85% of the copy bandwidth, itself ~92% of the data sheet; 60%
// of cuBLAS' large-GEMM rate, itself ~75% of the data sheet); for CPUs, whose figures are
// measured on this host, the CPU backend's target (90% of measured read bandwidth) and half the
// measured FMA peak.
struct Efficiency {
    double bandwidth = 0;
    double compute = 0;
};
Efficiency default_efficiency(DeviceKind kind) noexcept;

// Fills plan.estimate from plan.stages / per_rank / devices / link / serving.
void estimate_plan(const ModelDesc& model, Plan& plan);

// The cost model on one workload (for `tpserve bench`, which sets it beside measurements): decode
// of exactly `batch` sequences at `context` cached tokens each, split into one micro-batch per
// stage where the batch allows, and the prefill of one `prompt_tokens` prompt.
struct WorkloadEstimate {
    double decode_tps = 0;       // tokens/s over all sequences
    double time_per_token_s = 0; // between two tokens of one sequence
    double prefill_s = 0;
    int64_t micro_batches = 1;
};
// `gpu`: the fractions a measured GPU reached (scripts/gpu-check), used for GPU cards instead of
// the defaults; null: the defaults.
WorkloadEstimate estimate_workload(const ModelDesc& model, const Plan& plan, int64_t batch, int64_t context,
                                   int64_t prompt_tokens, const Efficiency* gpu = nullptr);

}  // namespace tps
