// The price of splitting a model: batch-1 decode tokens/s of one model run as a plan says, under
// mpirun, against the same model in one process. On this 2-core machine the comparison the
// sharded-execution issue asks for is TP=2 (2 ranks x 1 thread) against 1 rank x 2 threads:
//   mpirun -np 1 --bind-to none build/release/benchmarks/tp_bench --threads 2
//   mpirun -np 2 build/release/benchmarks/tp_bench --threads 1
// (--bind-to none: Open MPI binds a rank to one core by default, and two threads on one core
// measure nothing but the binding.)
// The model is Llama-3.1-8B's layer shape (hidden 4096, 32 heads, 8 KV heads, FFN 14336,
// vocabulary 128256) cut to --layers layers, seeded random weights in --type, loaded shard by
// shard through the same loader as a checkpoint. Each rank reports the time its step spent in
// collectives (the communicators' own instrumentation), per decode step.
#include "tpserve/comm/mpi_world.h"
#include "tpserve/comm/parallel_mapping.h"
#include "tpserve/comm/stage_groups.h"
#include "tpserve/engine/driver.h"
#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace tps;

struct Args {
    std::string model = "llama-3.1-8b";
    int64_t layers = 4;
    DType type = DType::f16;
    int threads = 1;
    std::string stages;  // e.g. "2" or "1,1"; default: one TP group of every rank
    int64_t prompt = 32;
    int64_t tokens = 48;
    int rounds = 3;
};

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--model") a.model = v;
        else if (k == "--layers") a.layers = std::atoll(v.c_str());
        else if (k == "--type") a.type = *parse_dtype(v);
        else if (k == "--threads") a.threads = std::atoi(v.c_str());
        else if (k == "--stages") a.stages = v;
        else if (k == "--prompt") a.prompt = std::atoll(v.c_str());
        else if (k == "--tokens") a.tokens = std::atoll(v.c_str());
        else if (k == "--rounds") a.rounds = std::atoi(v.c_str());
        else throw UsageError("unknown flag " + k);
    }
    return a;
}

ModelDesc cut(ModelDesc m, int64_t layers) {
    m.layers = layers;
    m.layer_tensors.resize(static_cast<size_t>(layers));
    m.name += fmt::format(" ({} layers)", layers);
    return m;
}

Plan plan_for(const ModelDesc& m, int world, const std::string& stages) {
    std::vector<std::string> cards(static_cast<size_t>(world), "cpu:64:10:1");
    ServingShape serving;
    serving.max_batch = 1;
    serving.max_context = 1024;
    serving.kv_dtype = DType::f32;
    serving.prefill_chunk = 64;
    PlanRequest req = request_for_devices(m, parse_device_list(fmt::format("{}", fmt::join(cards, ","))), serving);
    req.stage_tp = parse_stage_tp(stages.empty() ? std::to_string(world) : stages);
    const auto plan = best_feasible_plan(req);
    if (!plan) throw InputError("no plan fits");
    return *plan;
}

}  // namespace

int main(int argc, char** argv) {
    MpiWorld mpi(&argc, &argv);
    try {
        const Args a = parse(argc, argv);
        ModelDesc m = cut(load_model(a.model), a.layers);
        apply_weight_format(m, a.type);
        const int world_size = mpi.size();
        const Plan plan = plan_for(m, world_size, a.stages);
        const ParallelMapping map(plan, world_size, mpi.rank());
        auto world = mpi.world();
        StageGroups groups = make_stage_groups(mpi, map);
        auto& tp = groups.tp;
        auto control = mpi.control();
        const StageLinks links{map, world.get(), tp.get(), groups.from_prev.get(), groups.to_next.get()};
        const bool single = world_size == 1;

        auto backend = make_cpu_backend(a.threads);
        const ShardSpec spec{map.tp_size(), map.tp_rank(), map.first_layer(), map.last_layer(), map.first_stage(),
                             map.last_stage()};
        ModelOptions mo;
        mo.max_step_tokens = plan.serving.prefill_chunk;
        mo.max_logit_rows = 1;
        mo.kv_tokens = plan.kv_tokens;
        mo.kv_dtype = DType::f32;
        LlamaModel model(m, load_llama_weights(WeightSource::random(m, a.type, 1234), m, spec), *backend, mo,
                         single ? nullptr : &links);
        world->barrier("loaded");

        if (mpi.rank() != 0) {
            run_worker(model, links, *control);
            const CommStats& s = tp ? tp->stats() : world->stats();
            const std::string line = fmt::format("  rank {}: {:.3f} ms per step in collectives ({} all-reduces per step)\n",
                                                 mpi.rank(), 1e3 * s.total_seconds() / static_cast<double>(a.rounds * a.tokens),
                                                 s.calls[0] / std::max<int64_t>(1, a.rounds * (a.tokens + 1)));
            world->post_message({line.begin(), line.end()}, 0, "report");
            world->flush_posted("report");
            world->barrier("done");
            return 0;
        }
        Driver driver(model, single ? nullptr : &links, single ? nullptr : control.get());
        std::vector<double> rates;
        double comm_seconds = 0;
        for (int round = 0; round < a.rounds; ++round) {
            std::vector<int32_t> prompt;
            for (int64_t i = 0; i < a.prompt; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + round) % m.vocab));
            SequenceStep s{round, prompt, 0, false};
            s.output = StepOutputKind::greedy;
            int32_t token = driver.run({s}).entries[0].tokens[0];
            world->reset_stats();
            if (tp) tp->reset_stats();
            const auto t0 = std::chrono::steady_clock::now();
            for (int64_t i = 0; i < a.tokens; ++i) {
                SequenceStep d{round, {token}, a.prompt + i, false};
                d.output = StepOutputKind::greedy;
                token = driver.run({d}).entries[0].tokens[0];
            }
            const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            rates.push_back(static_cast<double>(a.tokens) / t);
            comm_seconds += (tp ? tp->stats() : world->stats()).total_seconds();
            driver.release(round);
        }
        driver.shutdown();
        std::sort(rates.begin(), rates.end());
        std::printf("%s, %s, %d rank(s) x %d thread(s) (rank 0 may run on %d CPUs), shape %s: decode %.2f tok/s (median of %d rounds of %lld tokens; "
                    "min %.2f, max %.2f)\n",
                    m.name.c_str(), std::string(dtype_name(a.type)).c_str(), world_size, a.threads, usable_cpus(),
                    plan.shape.c_str(),
                    rates[rates.size() / 2], a.rounds, static_cast<long long>(a.tokens), rates.front(), rates.back());
        std::printf("  rank 0: %.3f ms per step in collectives\n",
                    1e3 * comm_seconds / static_cast<double>(a.rounds * a.tokens));
        for (int r = 1; r < world_size; ++r) {
            const auto bytes = world->receive_message(r, "report");
            std::fwrite(bytes.data(), 1, bytes.size(), stdout);
        }
        world->barrier("done");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tp_bench (rank %d): %s\n", mpi.rank(), e.what());
        MpiWorld::abort(1);
    }
}
