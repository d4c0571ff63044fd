// Starting a split model under mpirun, shared by `generate` and `serve`: every rank opens the
// model, rank 0 reads or makes the plan and broadcasts it, every rank checks it, builds its
// communicators and loads only its shard. Each step is agreed across ranks (mpi_session.h), so a
// bad plan or a missing file is refused on every rank with one line each, never a hang.
#pragma once

#include "tpserve/comm/mpi_world.h"
#include "tpserve/comm/parallel_mapping.h"
#include "tpserve/comm/stage_groups.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/llama.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/plan.h"
#include "tpserve/partition/planner.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps::cli {

struct ShardRequest {
    std::string model_path;
    std::string plan_file;  // empty: rank 0 plans with make_request
    // rank 0, without a plan file: the planner's request for this model and world size
    std::function<PlanRequest(const ModelDesc&, int world_size)> make_request;
    int threads = 0;        // 0: the rank's share of its host
    double startup_deadline = 600;
};

struct Shard {
    ModelFiles files;
    Plan plan;
    std::optional<ParallelMapping> map;
    std::unique_ptr<Communicator> world;
    StageGroups groups;
    std::unique_ptr<ControlChannel> control;
    std::optional<StageLinks> links;
    std::unique_ptr<Backend> backend;
    std::optional<LlamaModel> model;

    // Resets every communicator's statistics (so they count the steps alone).
    void reset_comm_stats();
};

// The serving shape `generate` and `serve` ask the planner for, on this machine's CPU ranks.
struct CpuServing {
    int64_t max_batch = 1;
    int64_t max_context = 0;  // 0: the model's context, at most 4096
    int64_t prefill_chunk = 256;
    DType kv_dtype = DType::f32;
    std::vector<int> stage_tp;  // --stages; empty: the planner's choice
};

// The context a command runs with (--max-context, or its default); UsageError past the model's.
int64_t resolve_context(int64_t asked, const ModelDesc& model);

// The planner's request for cpu ranks: bands from nothing to the device's memory (the KV cache
// is sized for the batch and context asked, not grown to fill a band). UsageError naming `command`
// when `devices` holds a GPU.
PlanRequest cpu_plan_request(const ModelDesc& model, const std::string& devices, const CpuServing& serving,
                             std::string_view command);

// One process: the plan file, checked against the model, or else the planner's plan for `request`.
Plan one_process_plan(const std::string& plan_file, const ModelDesc& model, const std::function<PlanRequest()>& request);

// Every rank: this rank's shard, loaded. Throws (on every rank) when any rank fails.
std::unique_ptr<Shard> load_shard(MpiWorld& mpi, const ShardRequest& request);

// The host's CPUs shared by the ranks on it, and no more than this rank may run on (mpirun binds
// each rank to a core unless told --bind-to none); warns when `asked` is more than that.
int rank_threads(int asked, int local_ranks, int rank, const char* command);

}  // namespace tps::cli
