// The Plan: the contract every part downstream of the planner reads (docs/planner.md has its JSON
// schema). Stages are contiguous layer ranges [first, last) run by a tensor-parallel group of
// ranks; every rank's predicted bytes sit inside its card's band.
#pragma once

#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/dtype.h"
#include "tpserve/partition/link.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tps {

enum class Objective : uint8_t { latency, throughput };
std::string_view objective_name(Objective o) noexcept;

// What the plan is sized for.
struct ServingShape {
    int64_t max_batch = 32;        // sequences decoded in one step
    int64_t max_context = 0;       // tokens per sequence (prompt + output); 0 = min(model's, 8192)
    DType kv_dtype = DType::bf16;  // KV-cache element type
    int64_t prefill_chunk = 2048;  // most prompt tokens in one step: the largest step's activations
    int64_t prompt_tokens = 1024;  // prompt length of the prefill-time estimate
    Objective objective = Objective::latency;
};

struct MemoryBytes {
    int64_t weights = 0;
    int64_t kv_cache = 0;
    int64_t activations = 0;  // activations and workspace of the largest step
    int64_t runtime = 0;      // CUDA context, cuBLAS workspace, NCCL buffers
    int64_t total() const noexcept { return weights + kv_cache + activations + runtime; }
};

struct StagePlan {
    int index = 0;
    int64_t first_layer = 0;  // [first_layer, last_layer)
    int64_t last_layer = 0;
    int tp = 1;
    std::vector<int> ranks;    // global ranks, tp rank order
    std::vector<int> devices;  // device index (position in --gpus) of each rank
    int64_t kv_heads_per_rank = 0;
    bool kv_replicated = false;  // fewer KV heads than tp: each rank holds one head, shared by tp/kv ranks
    int64_t kv_tokens = 0;       // KV capacity of this stage, tokens
};

struct RankPlan {
    int rank = 0;
    int stage = 0;
    int tp_rank = 0;
    int device = 0;
    std::string device_name;
    int64_t first_layer = 0;
    int64_t last_layer = 0;
    int64_t vocab_first = 0;  // rows of the embedding / LM head this rank holds, [first, last)
    int64_t vocab_last = 0;
    MemoryBytes bytes;
    Band band;
};

// Time of one stage for one step, split into the cost model's terms (seconds).
struct StageTime {
    double memory_s = 0;     // weights and KV entries read at the card's effective bandwidth
    double compute_s = 0;    // FLOPs at the card's effective compute rate
    double busy_s = 0;       // sum over layers of max(memory, compute)
    double allreduce_s = 0;  // tensor-parallel all-reduces
    int64_t allreduces = 0;
    double handover_s = 0;   // activations to the next stage (or ids back to rank 0)
    double total_s = 0;
};

struct Estimate {
    double decode_tps_batch1 = 0;  // tokens/s of one sequence
    double decode_tps_max_batch = 0;
    int64_t max_batch = 0;         // sequences in flight: min(serving max_batch, KV capacity / context)
    int64_t micro_batches = 1;     // in flight at once, one per pipeline stage where the batch allows
    double prefill_s = 0;          // one prompt of prompt_tokens
    int64_t prompt_tokens = 0;
    int64_t context_tokens = 0;    // context length the decode estimate assumes
    std::vector<StageTime> batch1;
    std::vector<StageTime> max_batch_stages;
    std::vector<StageTime> prefill;
    double bandwidth_efficiency = 0;
    double compute_efficiency = 0;
};

struct Alternative {
    std::string shape;
    bool feasible = false;
    double decode_tps_batch1 = 0;
    double decode_tps_max_batch = 0;
    double prefill_s = 0;
    std::string reason;  // why it lost, or why it is infeasible
};

struct ModelSummary {
    std::string name;
    std::string source;
    std::string architecture;
    std::string fingerprint;
    int64_t layers = 0;
    int64_t hidden = 0;
    int64_t intermediate = 0;
    int64_t heads = 0;
    int64_t kv_heads = 0;
    int64_t head_dim = 0;
    int64_t vocab = 0;
    int64_t experts = 0;
    int64_t experts_active = 0;
    bool tied_embeddings = false;
    std::string weight_format;
    int64_t weight_bytes = 0;
    int64_t parameters = 0;
};

struct Plan {
    ModelSummary model;
    ServingShape serving;
    std::vector<DeviceProfile> devices;  // as given to --gpus, index = device id
    std::vector<Band> bands;             // per device
    LinkProfile link;
    int world_size = 0;
    std::string shape;  // "tp4", "pp2", "tp2xpp2", "pp2[tp2 rtx5090 | tp1 rtx4090]"
    std::vector<StagePlan> stages;
    std::vector<RankPlan> per_rank;
    int64_t kv_tokens = 0;  // tokens of KV the whole pipeline holds (min over stages)
    Estimate estimate;
    std::string rationale;  // why this shape beat the runner-up, in the cost model's terms
    std::vector<Alternative> alternatives;
    std::vector<std::string> notes;
};

}  // namespace tps
