#include "shard_setup.h"

#include "mpi_session.h"

#include "tpserve/comm/nccl_communicator.h"
#include "tpserve/common/check.h"
#include "tpserve/engine/cuda_devices.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/plan_json.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace tps::cli {

std::vector<Communicator*> Shard::stage_comms() const {
    std::vector<Communicator*> out;
    for (auto* c : {groups.tp.get(), groups.from_prev.get(), groups.to_next.get(), nccl_tp.get(), nccl_prev.get(),
                    nccl_next.get()}) {
        if (c) out.push_back(c);
    }
    return out;
}

void Shard::reset_comm_stats() {
    world->reset_stats();
    for (auto* c : stage_comms()) c->reset_stats();
}

int64_t resolve_context(int64_t asked, const ModelDesc& m) {
    const int64_t context = asked == 0 ? std::min<int64_t>(m.max_context, 4096) : asked;
    TPS_CHECK_AS(UsageError, context <= m.max_context, "--max-context: {} exceeds the model's context of {}", context,
                 m.max_context);
    return context;
}

std::vector<DeviceProfile> local_gpus(std::string_view flag, int first, int count) {
    // names and memory only: no CUDA context is made on any device (list_cuda_devices(false))
    const auto found = list_cuda_devices(/*free_memory=*/false);
    TPS_CHECK_AS(UsageError, !found.empty(), "{}: no CUDA device found ({}); name the cards, e.g. --gpus 4xrtx5090", flag,
                 cuda_unavailable_reason());
    if (count < 0) count = static_cast<int>(found.size()) - first;
    TPS_CHECK_AS(UsageError, first >= 0 && count >= 1 && first + count <= static_cast<int>(found.size()),
                 "{}: {} GPU(s) from device {} asked for, {} here", flag, count, first, found.size());
    std::vector<DeviceProfile> out;
    for (int i = first; i < first + count; ++i) {
        const CudaDevice& d = found[static_cast<size_t>(i)];
        auto p = catalog_match(d.name);
        TPS_CHECK_AS(UsageError, p.has_value(),
                     "{}: device {} ({}, {:.1f} GiB) is not in the catalog; give it as --gpus name:mem_gb:bw_gbs:tflops",
                     flag, d.index, d.name, static_cast<double>(d.total_bytes) / (1 << 30));
        // the driver keeps some memory back: plan against what CUDA reports, not the data sheet
        p->memory_bytes = d.total_bytes;
        p->source += fmt::format("; capacity {:.1f} GiB as CUDA reports it", static_cast<double>(d.total_bytes) / (1 << 30));
        out.push_back(*p);
    }
    return out;
}

int rank_gpu(const MpiWorld& mpi) {
    // a launcher that shows each rank only its own GPU (SLURM --gpus-per-task, a per-rank
    // CUDA_VISIBLE_DEVICES) leaves one device visible: take it
    const auto visible = static_cast<int>(list_cuda_devices(/*free_memory=*/false).size());
    return visible > 0 ? mpi.local_rank() % visible : mpi.local_rank();
}

PlanRequest serving_plan_request(const ModelDesc& m, const std::string& gpus, int ranks, const CpuServing& s,
                                 std::string_view command, bool cuda, int device) {
    std::vector<DeviceProfile> list;
    if (gpus == "auto" || (gpus.empty() && cuda)) {
        // this machine's GPUs: in one process the one --device names, under mpirun the first `ranks`
        const std::string flag = gpus.empty() ? "--backend cuda" : "--gpus auto";
        list = ranks == 1 ? local_gpus(flag, device, 1) : local_gpus(flag, 0, ranks);
    } else if (!gpus.empty()) {
        list = parse_device_list(gpus);
    } else {
        list = parse_device_list(fmt::format("{}xcpu", ranks));
    }
    for (const auto& d : list) {
        TPS_CHECK_AS(UsageError, (d.kind == DeviceKind::gpu) == cuda,
                     "--gpus: '{}' is {} device but `tpserve {}` runs on {} (--backend {})", d.name,
                     d.kind == DeviceKind::gpu ? "a GPU" : "a cpu", command, cuda ? "GPUs" : "this machine's CPU",
                     cuda ? "cuda" : "cpu; give --gpus as Nxcpu, or --backend cuda for GPUs");
    }
    const int64_t context = resolve_context(s.max_context, m);
    ServingShape serving;
    serving.max_batch = s.max_batch;
    serving.max_context = context;
    serving.kv_dtype = s.kv_dtype;
    serving.prefill_chunk = std::min(s.prefill_chunk, context);
    PlanRequest req = request_for_devices(m, std::move(list), serving);
    req.stage_tp = s.stage_tp;
    return req;
}

Plan one_process_plan(const std::string& plan_file, const ModelDesc& m, const std::function<PlanRequest()>& request) {
    if (!plan_file.empty()) {
        Plan plan = read_plan_file(plan_file);
        check_plan_matches_model(plan, m, plan_file);
        return plan;
    }
    const PlanResult result = make_plan(request());
    TPS_CHECK_AS(InputError, result.feasible, "no plan fits: {}", result.why_infeasible);
    return result.plan;
}

int rank_threads(int asked, int local_ranks, int rank, const char* command) {
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const int mine = usable_cpus();
    if (asked == 0) return std::max(1, std::min(mine, hardware / std::max(1, local_ranks)));
    if (asked > mine) {
        std::fprintf(stderr,
                     "%s (rank %d): --threads %d, but this rank may run on %d CPU(s); mpirun binds each rank to a core "
                     "unless given --bind-to none (or --map-by slot:PE=%d)\n",
                     command, rank, asked, mine, asked);
    }
    return asked;
}

ModelFiles open_model(const std::string& path, std::optional<DType> format) {
    ModelFiles files = ModelFiles::open(path);
    if (format) files.store_layers_as(*format);
    return files;
}

std::unique_ptr<Shard> load_shard(MpiWorld& mpi, const ShardRequest& request) {
    auto shard = std::make_unique<Shard>();
    Shard& s = *shard;
    s.world = mpi.world();
    const int rank = mpi.rank();
    const double startup = request.startup_deadline;

    agree(*s.world, "open the model", [&] { s.files = open_model(request.model_path, request.format); }, startup);

    std::string plan_text;
    agree(*s.world, "make or read the plan", [&] {
        if (rank != 0) return;
        if (!request.plan_file.empty()) {
            std::ifstream in(request.plan_file);
            TPS_CHECK_AS(InputError, in.good(), "--plan: cannot read '{}'", request.plan_file);
            std::stringstream ss;
            ss << in.rdbuf();
            plan_text = ss.str();
            return;
        }
        const PlanRequest req = request.make_request(s.files.desc, mpi.size());
        TPS_CHECK_AS(UsageError, static_cast<int>(req.devices.size()) == mpi.size(),
                     "--gpus gives {} devices but mpirun started {} ranks", req.devices.size(), mpi.size());
        const PlanResult result = make_plan(req);
        TPS_CHECK_AS(InputError, result.feasible, "no plan fits: {}", result.why_infeasible);
        plan_text = plan_to_json(result.plan).dump();
    }, startup);
    plan_text = broadcast_string(*s.world, std::move(plan_text), "the plan");

    const std::string origin = request.plan_file.empty() ? std::string("the plan rank 0 made") : request.plan_file;
    agree(*s.world, "accept the plan", [&] {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(plan_text);
        } catch (const nlohmann::json::exception& e) {
            throw InputError(fmt::format("{}: not JSON ({})", origin, e.what()));
        }
        s.plan = plan_from_json(j, origin);
        check_plan_matches_model(s.plan, s.files.desc, origin);
        s.map.emplace(s.plan, mpi.size(), rank);
    }, startup);

    s.groups = make_stage_groups(mpi, *s.map);
    s.control = mpi.control();
    StageLinks links{*s.map, s.world.get(), s.groups.tp.get(), s.groups.from_prev.get(), s.groups.to_next.get()};
    int gpu = -1;  // with the CUDA backend: this rank's device
    agree(*s.world, request.cuda ? "start its GPU" : "start its backend", [&] {
        if (request.cuda) {
            gpu = rank_gpu(mpi);
            s.backend = make_cuda_backend(gpu);
        } else {
            s.backend = make_cpu_backend(rank_threads(request.threads, mpi.local_size(), rank, "tpserve"));
        }
    }, startup);
    if (request.cuda) {
        // Activations move between GPUs through NCCL on the backend's stream, so a collective is
        // ordered after the kernels that wrote its buffer and before those that read it. Groups are
        // joined in one order (tensor-parallel, then from the previous stage, then to the next),
        // which every stage follows, so no two ranks wait on each other's joins.
        agree(*s.world, "join NCCL", [&] {
            // NCCL's start-up (the id broadcast, then the init) waits under the start-up deadline,
            // not the per-operation one
            const double per_op = mpi.deadline();
            mpi.set_deadline(startup);
            struct Restore {
                MpiWorld& mpi;
                double seconds;
                ~Restore() { mpi.set_deadline(seconds); }
            } restore{mpi, per_op};
            if (!s.groups.tp && !s.groups.from_prev && !s.groups.to_next) return;  // one rank: no NCCL
            void* stream = s.backend->native_stream();
            s.nccl_queue = std::make_unique<NcclQueue>(stream);
            NcclQueue* q = s.nccl_queue.get();
            if (s.groups.tp) s.nccl_tp = make_nccl_communicator(*s.groups.tp, gpu, stream, q);
            if (s.groups.from_prev) s.nccl_prev = make_nccl_communicator(*s.groups.from_prev, gpu, stream, q);
            if (s.groups.to_next) s.nccl_next = make_nccl_communicator(*s.groups.to_next, gpu, stream, q);
            // the collectives are queued with the kernels, and the step's output waits for them
            // (with their deadline) rather than the host after each one
            s.backend->set_stream_wait([q] { q->wait(); });
        }, startup);
        links.tp = s.nccl_tp.get();
        links.tp_host = s.groups.tp.get();
        links.from_prev = s.nccl_prev.get();
        links.to_next = s.nccl_next.get();
    }
    s.links.emplace(links);

    agree(*s.world, "load its shard", [&] {
        ShardSpec spec;
        spec.tp = s.map->tp_size();
        spec.tp_rank = s.map->tp_rank();
        spec.first_layer = s.map->first_layer();
        spec.last_layer = s.map->last_layer();
        spec.first_stage = s.map->first_stage();
        spec.last_stage = s.map->last_stage();
        check_backend_computes(s.files.desc, *s.backend);  // (before the weights load)
        LlamaWeights weights = load_llama_weights(s.files.weights, s.files.desc, spec);
        s.model.emplace(s.files.desc, std::move(weights), *s.backend, model_options_for(s.plan), &*s.links);
        // read the mapped shard from disk now, inside the start-up deadline, not in the first step
        // (where a slow disk would look like a stalled rank to the others)
        s.model->weights().touch();
    }, startup);
    return shard;
}

}  // namespace tps::cli
