// How long the planner takes: the whole search (every shape fitted and scored, alternatives and,
// when nothing fits, the suggestions) for growing card counts, best of several runs. The figure
// quoted in docs/planner.md comes from here:
//   build/release/benchmarks/planner_bench
#include "tpserve/partition/band.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace {

struct Case {
    const char* model;
    const char* format;  // "" = the checkpoint's
    const char* gpus;
};

double seconds_of(const tps::PlanRequest& req, int reps, bool* feasible, size_t* shapes) {
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const tps::PlanResult r = tps::make_plan(req);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        *feasible = r.feasible;
        *shapes = r.candidates.size();
    }
    return best;
}

}  // namespace

int main() {
    const Case cases[] = {
        {"llama-3.1-70b", "int8", "4xrtx5090"},
        {"llama-3.1-70b", "", "4xrtx5090"},  // infeasible: includes the suggestion search
        {"qwen2.5-72b", "", "8xrtx5090"},
        {"llama-3.1-70b", "", "8xrtx5090"},
        {"mixtral-8x7b", "", "8xrtx4090"},
        {"llama-3.1-70b", "int4", "4xrtx5090,4xrtx4090"},
        {"qwen2.5-72b", "int8", "2xrtx5090,2xrtx4090,2xrtx3090,2xl40s"},
        {"llama-3.1-70b", "", "16xrtx4090"},
    };
    std::printf("%-16s %-6s %-38s %9s %8s %12s\n", "model", "format", "cards", "feasible", "shapes", "plan time");
    for (const Case& c : cases) {
        tps::PlanRequest req;
        req.model = tps::load_model(c.model);
        if (*c.format) tps::apply_weight_format(req.model, *tps::parse_dtype(c.format));
        req.devices = tps::parse_device_list(c.gpus);
        req.bands = tps::parse_budget("", req.devices);
        req.link = tps::link_for_devices(req.devices, std::nullopt, std::nullopt);
        bool feasible = false;
        size_t shapes = 0;
        const double s = seconds_of(req, 5, &feasible, &shapes);
        std::printf("%-16s %-6s %-38s %9s %8zu %9.1f ms\n", c.model, *c.format ? c.format : "ckpt", c.gpus,
                    feasible ? "yes" : "no", shapes, s * 1e3);
    }
    return 0;
}
