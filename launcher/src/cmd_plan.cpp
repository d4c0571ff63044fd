// `tpserve plan`: model + cards + bands + link + serving shape in, the planner's report (or its
// JSON, or both) out. Exit 0 with a plan, 3 when nothing fits, 2 for bad flags.
#include "cli.h"
#include "commands.h"
#include "shard_setup.h"

#include "tpserve/common/strings.h"
#include "tpserve/engine/cuda_devices.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/plan_json.h"
#include "tpserve/partition/planner.h"
#include "tpserve/partition/report.h"

#include <fmt/format.h>

#include <cstdio>
#include <fstream>

namespace tps::cli {
namespace {

std::string preset_list() {
    std::string s;
    for (const auto& p : presets()) s += (s.empty() ? "" : ", ") + std::string(p.name);
    return s;
}

}  // namespace

int run_plan(int argc, char** argv) {
    cxxopts::Options options("tpserve plan", "Plan how to split a model across cards: tensor parallelism inside a "
                                             "stage, pipeline stages between, every card inside its memory band.");
    options.set_width(100);
    // clang-format off
    options.add_options()
        ("m,model", "preset (" + preset_list() + "), HF model directory, config.json or .gguf file", cxxopts::value<std::string>())
        ("g,gpus", "cards: 4xrtx5090 | rtx5090,rtx5090,rtx4090 | name:mem_gb:bw_gbs:tflops | 2xcpu | auto", cxxopts::value<std::string>())
        ("f,format", "weight format of the layers: bf16, fp16, fp8, int8, int4 or a GGML type (not for GGUF)", cxxopts::value<std::string>())
        ("b,budget", "memory band in GiB, min:max for every card or one per card (default 62.5-75% of capacity)", cxxopts::value<std::string>()->default_value(""))
        ("link", "link between cards: pcie3, pcie4, pcie5, nvlink (default: from the cards)", cxxopts::value<std::string>())
        ("p2p", "GPU peer-to-peer: on or off (default: from the cards)", cxxopts::value<std::string>())
        ("link-profile", "link profile written by `tpserve check` (replaces the link defaults)", cxxopts::value<std::string>())
        ("max-batch", "sequences decoded together", cxxopts::value<std::string>()->default_value("32"))
        ("max-context", "tokens per sequence (default: the model's, at most 8192)", cxxopts::value<std::string>()->default_value("0"))
        ("kv-dtype", "KV cache type: bf16, f16, fp8, f32", cxxopts::value<std::string>()->default_value("bf16"))
        ("prefill-chunk", "most prompt tokens in one step", cxxopts::value<std::string>()->default_value("2048"))
        ("prompt-tokens", "prompt length of the prefill estimate", cxxopts::value<std::string>()->default_value("1024"))
        ("objective", "latency (batch-1 decode) or throughput (max-batch decode)", cxxopts::value<std::string>()->default_value("latency"))
        ("stages", "only this shape: each pipeline stage's TP degree in order (2,1 = stage 0 TP=2, stage 1 TP=1)", cxxopts::value<std::string>())
        ("json", "print the plan as JSON instead of the table")
        ("o,out", "also write the plan JSON to this file", cxxopts::value<std::string>())
        ("alternatives", "rows of other shapes in the table", cxxopts::value<std::string>()->default_value("12"))
        ("h,help", "show this help");
    // clang-format on
    const auto args = parse(options, argc, argv);
    if (args.count("help")) {
        std::fputs(options.help().c_str(), stdout);
        return kExitOk;
    }
    TPS_CHECK_AS(UsageError, args.count("model"), "--model is required (a preset: {})", preset_list());
    TPS_CHECK_AS(UsageError, args.count("gpus"), "--gpus is required (e.g. 4xrtx5090, rtx5090,rtx4090, 2xcpu, auto)");

    PlanRequest req;
    const std::string gpus = args["gpus"].as<std::string>();
    req.devices = gpus == "auto" ? local_gpus("--gpus auto") : parse_device_list(gpus);
    req.bands = parse_budget(args["budget"].as<std::string>(), req.devices);

    ServingShape& s = req.serving;
    s.max_batch = int_flag(args, "max-batch", 1, 65536);
    s.max_context = int_flag(args, "max-context", 0, int64_t{1} << 24);
    s.prefill_chunk = int_flag(args, "prefill-chunk", 1, 1 << 20);
    s.prompt_tokens = int_flag(args, "prompt-tokens", 1, int64_t{1} << 24);
    const std::string kv = args["kv-dtype"].as<std::string>();
    const auto kv_type = parse_dtype(kv);
    TPS_CHECK_AS(UsageError, kv_type && kv_element_bytes(*kv_type), "--kv-dtype: '{}' is not bf16, f16, fp8 or f32", kv);
    s.kv_dtype = *kv_type;
    const std::string objective = args["objective"].as<std::string>();
    TPS_CHECK_AS(UsageError, objective == "latency" || objective == "throughput",
                 "--objective: '{}' is not latency or throughput", objective);
    s.objective = objective == "latency" ? Objective::latency : Objective::throughput;
    const int64_t rows = int_flag(args, "alternatives", 0, 100000);
    if (args.count("stages")) req.stage_tp = parse_stage_tp(args["stages"].as<std::string>());

    std::optional<LinkKind> link_kind;
    if (args.count("link")) {
        link_kind = parse_link_kind(args["link"].as<std::string>());
        TPS_CHECK_AS(UsageError, link_kind.has_value(), "--link: '{}' is not pcie3, pcie4, pcie5 or nvlink",
                     args["link"].as<std::string>());
    }
    std::optional<bool> p2p;
    if (args.count("p2p")) p2p = bool_flag(args, "p2p");
    if (args.count("link-profile")) {
        TPS_CHECK_AS(UsageError, !link_kind && !p2p, "--link-profile replaces --link and --p2p; give one or the other");
        req.link = read_link_profile(args["link-profile"].as<std::string>());
    } else {
        req.link = link_for_devices(req.devices, link_kind, p2p);
    }

    req.model = load_model(args["model"].as<std::string>());
    if (args.count("format")) {
        const std::string f = args["format"].as<std::string>();
        const auto fmt_type = parse_dtype(f);
        TPS_CHECK_AS(UsageError, fmt_type.has_value(), "--format: '{}' is not a weight format (bf16, fp16, fp8, int8, int4, q4_k, ...)", f);
        apply_weight_format(req.model, *fmt_type);
    }

    const PlanResult result = make_plan(req);
    const nlohmann::json j = result.feasible ? plan_to_json(result.plan) : infeasible_to_json(result);
    if (args.count("out")) {
        const std::string path = args["out"].as<std::string>();
        std::ofstream out(path);
        TPS_CHECK_AS(UsageError, out.good(), "--out: cannot write '{}'", path);
        out << j.dump(2) << '\n';
        TPS_CHECK_AS(UsageError, out.good(), "--out: writing '{}' failed", path);
    }
    if (args.count("json")) {
        std::fputs((j.dump(2) + "\n").c_str(), stdout);
    } else {
        std::fputs(format_plan_report(result, static_cast<size_t>(rows)).c_str(), stdout);
    }
    return result.feasible ? kExitOk : kExitInfeasible;
}

}  // namespace tps::cli
