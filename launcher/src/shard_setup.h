// Starting a split model under mpirun, shared by `generate` and `serve`: every rank opens the
// model, rank 0 reads or makes the plan and broadcasts it, every rank checks it, builds its
// communicators and loads only its shard. Each step is agreed across ranks (mpi_session.h), so a
// bad plan or a missing file is refused on every rank with one line each, never a hang.
#pragma once

#include "tpserve/comm/mpi_world.h"
#include "tpserve/comm/nccl_communicator.h"
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
    std::optional<DType> format;  // --format: the layers quantized to it as they load
    // rank 0, without a plan file: the planner's request for this model and world size
    std::function<PlanRequest(const ModelDesc&, int world_size)> make_request;
    int threads = 0;        // 0: the rank's share of its host
    bool cuda = false;      // one GPU per rank (its local rank's), NCCL between them
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
    // with the CUDA backend: NCCL over the groups above, on the backend's stream, their
    // collectives queued there (nccl_queue) and waited for at the step's output (declared after
    // it, so they go first: the communicators, then their queue)
    std::unique_ptr<NcclQueue> nccl_queue;
    std::unique_ptr<Communicator> nccl_tp, nccl_prev, nccl_next;
    std::optional<LlamaModel> model;

    // Resets every communicator's statistics (so they count the steps alone).
    void reset_comm_stats();
    // The stage's communicators (tensor-parallel, hand-overs; with the CUDA backend their NCCL
    // twins too, whose time is each collective's on the stream, peers' lateness included), those
    // present.
    std::vector<Communicator*> stage_comms() const;
};

// The serving shape `generate` and `serve` ask the planner for, on this machine's CPU ranks.
struct CpuServing {
    int64_t max_batch = 1;
    int64_t max_context = 0;  // 0: the model's context, at most 4096
    int64_t prefill_chunk = 256;
    DType kv_dtype = DType::f32;
    std::vector<int> stage_tp;  // --stages; empty: the planner's choice
};

// The model at `path`, its layers quantized to `format` as they load when one is given (--format).
ModelFiles open_model(const std::string& path, std::optional<DType> format);

// The context a command runs with (--max-context, or its default); UsageError past the model's.
int64_t resolve_context(int64_t asked, const ModelDesc& model);

// The planner's request for `ranks` ranks of `command`: on the devices --gpus names, else
// `ranks` CPU devices, or with `cuda` this machine's GPUs (`auto` likewise): in one process the
// one `device` names, under mpirun the first `ranks`. On CPU devices the bands run from nothing
// to the device's memory (the KV cache is sized for the batch and context asked, not grown to
// fill a band). UsageError when the devices are not of the backend's kind.
PlanRequest serving_plan_request(const ModelDesc& model, const std::string& gpus, int ranks, const CpuServing& serving,
                                 std::string_view command, bool cuda, int device = 0);
// This machine's CUDA devices [first, first + count) (count -1: to the last) as catalog profiles
// with the memory CUDA reports; no CUDA context is made. UsageError naming `flag` when there are
// too few or one of them is not in the catalog.
std::vector<DeviceProfile> local_gpus(std::string_view flag, int first = 0, int count = -1);
// The GPU this rank takes: its place among its host's ranks (modulo the devices it can see).
int rank_gpu(const MpiWorld& mpi);

// One process: the plan file, checked against the model, or else the planner's plan for `request`.
Plan one_process_plan(const std::string& plan_file, const ModelDesc& model, const std::function<PlanRequest()>& request);

// Every rank: this rank's shard, loaded. Throws (on every rank) when any rank fails.
std::unique_ptr<Shard> load_shard(MpiWorld& mpi, const ShardRequest& request);

// The host's CPUs shared by the ranks on it, and no more than this rank may run on (mpirun binds
// each rank to a core unless told --bind-to none); warns when `asked` is more than that.
int rank_threads(int asked, int local_ranks, int rank, const char* command);

}  // namespace tps::cli
