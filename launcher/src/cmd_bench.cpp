// `tpserve bench`: how throughput and latency scale with each rank added, measured, beside what
// the planner's cost model predicted (docs/bench.md). For each world size (and forced shape) it
// makes the plan, runs `mpirun -np R tpserve bench --worker` on it — the fixed workload through
// the serving scheduler — and collects the results; then speedup and efficiency against one rank,
// the prediction beside every measurement (flagged past 25%), and bench.json, bench.md and
// bench.png (gnuplot) in --out. With --predict it runs nothing: the cost model's table for cards
// this machine does not have, labelled as predicted.
#include "bench_http.h"
#include "bench_output.h"
#include "bench_worker.h"
#include "cli.h"
#include "commands.h"
#include "mpi_session.h"
#include "process.h"
#include "shard_setup.h"

#include "tpserve/common/strings.h"
#include "tpserve/engine/cuda_devices.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/band.h"
#include "tpserve/partition/cost_model.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/plan_json.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unistd.h>

namespace tps::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kFlagDeviation = 0.25;  // measured vs predicted beyond this is flagged

struct Settings {
    std::string model;
    std::vector<int> ranks{1, 2, 4};
    std::vector<std::string> shapes{"auto"};
    std::string gpus;  // --predict: the cards; --devices cuda: this machine's GPUs described (else the catalog's)
    bool cuda = false;  // --devices cuda: measured on this machine's GPUs, rank r on GPU r
    bool predict = false;
    bool http = false;  // through `tpserve serve` and streaming clients
    std::string format;
    BenchWorkload workload;
    fs::path out = "bench-out";
    std::string mpirun = "mpirun";
    std::vector<std::string> mpirun_flags;
    DType kv_dtype = DType::f32;
    double deadline = 120;
    int threads = 0;  // per rank; 0: the host's CPUs shared by the ranks
    std::optional<Efficiency> gpu;  // measured by scripts/gpu-check (--calibrate)
    std::string calibration_source;
};

// --calibrate FILE: {"card": "...", "bandwidth_efficiency": f, "compute_efficiency": f, "source":
// "..."} — the fractions of its data-sheet bandwidth and compute a GPU reached in scripts/gpu-check.
void read_calibration(const std::string& path, Settings& s) {
    std::ifstream in(path);
    TPS_CHECK_AS(UsageError, in.good(), "--calibrate: cannot read '{}'", path);
    const json j = json::parse(in, nullptr, false);
    TPS_CHECK_AS(UsageError, j.is_object(), "--calibrate: '{}' is not a JSON object", path);
    Efficiency e;
    for (auto [key, into] : {std::pair{"bandwidth_efficiency", &e.bandwidth}, std::pair{"compute_efficiency", &e.compute}}) {
        TPS_CHECK_AS(UsageError, j.contains(key) && j[key].is_number() && j[key].get<double>() > 0 && j[key].get<double>() <= 1,
                     "--calibrate: '{}' needs \"{}\", a fraction in (0, 1]", path, key);
        *into = j[key].get<double>();
    }
    s.gpu = e;
    s.calibration_source = fmt::format("measured on {} ({}): {:.0f}% of its data-sheet bandwidth, {:.0f}% of its compute, "
                                       "used for every GPU card",
                                       j.value("card", std::string("a GPU")), j.value("source", path), 100 * e.bandwidth,
                                       100 * e.compute);
}

std::vector<int64_t> int_list(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
    std::vector<int64_t> out;
    for (const auto& item : split(text, ',')) {
        const auto v = parse_int(trim(item));
        TPS_CHECK_AS(UsageError, v && *v >= lo && *v <= hi, "--{}: '{}' is not a whole number in {}..{}", flag, trim(item), lo, hi);
        out.push_back(*v);
    }
    TPS_CHECK_AS(UsageError, !out.empty(), "--{}: empty list", flag);
    return out;
}

Settings read_settings(const cxxopts::ParseResult& args) {
    Settings s;
    TPS_CHECK_AS(UsageError, args.count("model"), "--model is required (an HF model directory, a .gguf file, or with --predict a preset)");
    s.model = args["model"].as<std::string>();
    s.ranks.clear();
    for (int64_t r : int_list("ranks", args["ranks"].as<std::string>(), 1, 64)) s.ranks.push_back(static_cast<int>(r));
    TPS_CHECK_AS(UsageError, s.ranks.front() == 1, "--ranks must start with 1: speedup and efficiency are against one rank");
    for (size_t i = 1; i < s.ranks.size(); ++i) {
        TPS_CHECK_AS(UsageError, s.ranks[i] > s.ranks[i - 1], "--ranks: {} after {}: give them in increasing order", s.ranks[i], s.ranks[i - 1]);
    }
    s.shapes.clear();
    for (const auto& item : split(args["shapes"].as<std::string>(), ',')) {
        const std::string shape(trim(item));
        TPS_CHECK_AS(UsageError, shape == "auto" || shape == "tp" || shape == "pp" || shape == "tpxpp",
                     "--shapes: '{}' is not auto, tp, pp or tpxpp", shape);
        s.shapes.push_back(shape);
    }
    const std::string devices = args["devices"].as<std::string>();
    TPS_CHECK_AS(UsageError, devices == "cpu" || devices == "cuda",
                 "--devices: '{}' is not cpu or cuda (cards this machine does not have are predicted with --predict "
                 "--gpus)",
                 devices);
    s.cuda = devices == "cuda";
    if (args.count("gpus")) s.gpus = args["gpus"].as<std::string>();
    s.predict = args.count("predict") > 0;
    s.http = args.count("http") > 0;
    TPS_CHECK_AS(UsageError, !(s.predict && s.http), "--http measures through the server; --predict runs nothing: give one");
    TPS_CHECK_AS(UsageError, !s.predict || !s.gpus.empty(), "--predict needs --gpus (e.g. --gpus 4xrtx5090)");
    TPS_CHECK_AS(UsageError, s.predict || s.cuda || s.gpus.empty(),
                 "--gpus is for --predict, or with --devices cuda to describe this machine's GPUs: measured runs on the "
                 "CPU use it (--devices cpu), one rank per device");
    TPS_CHECK_AS(UsageError, !(s.predict && s.cuda), "--devices cuda measures on this machine's GPUs; --predict runs nothing: give one");
    if (args.count("format")) s.format = args["format"].as<std::string>();
    if (args.count("calibrate")) {
        TPS_CHECK_AS(UsageError, s.predict, "--calibrate is for --predict (GPU cards)");
        read_calibration(args["calibrate"].as<std::string>(), s);
    }
    s.workload.prompt_tokens = int_flag(args, "prompt-tokens", 1, 1 << 16);
    s.workload.decode_tokens = int_flag(args, "decode-tokens", 2, 1 << 16);
    s.workload.batches = int_list("batches", args["batches"].as<std::string>(), 1, 4096);
    if (args.count("quick")) {
        s.workload.prompt_tokens = 16;
        s.workload.decode_tokens = 8;
        s.workload.batches = {1, 4};
    }
    s.out = args["out"].as<std::string>();
    s.mpirun = args["mpirun"].as<std::string>();
    s.deadline = seconds_flag(args, "deadline");
    s.threads = static_cast<int>(int_flag(args, "threads", 0, 1024));
    s.kv_dtype = kv_dtype_flag(args);
    return s;
}

int host_cpus() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

// The stage TP degrees of a forced shape at `ranks`, or empty when the shape is the planner's
// choice; nullopt when the shape does not exist at that size (tp x pp needs 4 or more, even).
std::optional<std::vector<int>> shape_stages(const std::string& shape, int ranks) {
    if (shape == "auto") return std::vector<int>{};
    if (ranks == 1) return std::nullopt;  // the same as auto
    if (shape == "tp") return std::vector<int>{ranks};
    if (shape == "pp") return std::vector<int>(static_cast<size_t>(ranks), 1);
    if (ranks >= 4 && ranks % 2 == 0) return std::vector<int>(static_cast<size_t>(ranks / 2), 2);
    return std::nullopt;
}

// The GPUs measured runs use, rank r on GPU r: this machine's first `count` as the catalog knows
// them, or as --gpus describes them (cards the catalog lacks); either way this machine has them.
std::vector<DeviceProfile> measured_gpus(const std::string& gpus, int count) {
    if (gpus.empty()) return local_gpus("--devices cuda", 0, count);
    std::vector<DeviceProfile> all = parse_device_list(gpus);
    TPS_CHECK_AS(UsageError, static_cast<int>(all.size()) >= count, "--gpus gives {} cards; --ranks asks for {}", all.size(), count);
    for (const auto& d : all) {
        TPS_CHECK_AS(UsageError, d.kind == DeviceKind::gpu, "--gpus: '{}' is not a GPU, and --devices cuda measures on GPUs", d.name);
    }
    const auto found = list_cuda_devices(/*free_memory=*/false);
    TPS_CHECK_AS(UsageError, static_cast<int>(found.size()) >= count, "--devices cuda: {} GPU(s) asked for, {} here{}", count,
                 found.size(), found.empty() ? fmt::format(" ({})", cuda_unavailable_reason()) : std::string());
    all.resize(static_cast<size_t>(count));
    return all;
}

PlanRequest make_request(const Settings& s, const ModelDesc& model, int ranks, const std::vector<int>& stages) {
    ServingShape serving;
    serving.max_batch = *std::max_element(s.workload.batches.begin(), s.workload.batches.end());
    const int64_t context = s.workload.prompt_tokens + s.workload.decode_tokens + 1;
    serving.max_context = std::min(model.max_context, (context + kKvBlockTokens - 1) / kKvBlockTokens * kKvBlockTokens);
    serving.kv_dtype = s.kv_dtype;
    serving.prefill_chunk = std::min<int64_t>(256, serving.max_context);
    serving.prompt_tokens = s.workload.prompt_tokens;
    PlanRequest req;
    if (s.predict) {
        std::vector<DeviceProfile> all = parse_device_list(s.gpus);
        TPS_CHECK_AS(UsageError, static_cast<int>(all.size()) >= ranks, "--gpus gives {} cards; --ranks asks for {}", all.size(), ranks);
        all.resize(static_cast<size_t>(ranks));
        req.model = model;
        req.devices = all;
        req.bands = parse_budget("", req.devices);
        req.link = link_for_devices(req.devices, std::nullopt, std::nullopt);
        req.serving = resolve_serving(model, serving);
    } else if (s.cuda) {
        req = request_for_devices(model, measured_gpus(s.gpus, ranks), serving);
    } else {
        req = request_for_devices(model, parse_device_list(fmt::format("{}xcpu", ranks)), serving);
    }
    req.stage_tp = stages;
    return req;
}

// Runs argv with stdout and stderr into `log`; returns the exit status (or 128 + signal; 124 when
// it ran past `timeout_s` and was stopped).
int run_logged(const std::vector<std::string>& argv, const fs::path& log, double timeout_s) {
    const pid_t pid = spawn_logged(argv, log);
    if (const auto status = wait_exit(pid, timeout_s)) {
        kill_group(pid);  // nothing of the run outlives it
        return *status;
    }
    ::kill(pid, SIGTERM);
    if (!wait_exit(pid, 30)) {
        kill_group(pid);
        wait_exit(pid, 10);
    }
    kill_group(pid);
    return 124;
}

std::string self_path() {
    std::error_code ec;
    const fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? std::string("tpserve") : p.string();
}

json pair(const std::optional<double>& measured, double predicted) {
    return {{"measured", measured ? json(*measured) : json(nullptr)}, {"predicted", predicted}};
}

// One point: its plan, its run (unless predicting), the prediction beside each figure.
json run_point(const Settings& s, const ModelDesc& model, int ranks, const std::string& shape, const std::vector<int>& stages,
               size_t index, size_t count) {
    json point = {{"ranks", ranks}, {"shape", shape}, {"oversubscribed", !s.predict && !s.cuda && ranks > host_cpus()}};
    PlanResult planned;
    try {
        planned = make_plan(make_request(s, model, ranks, stages));
    } catch (const UsageError& e) {
        if (stages.empty()) throw;
        planned.feasible = false;  // a forced shape this model cannot take (heads the TP degree does not divide)
        planned.why_infeasible = e.what();
        const std::string prefix = "--stages: ";
        if (planned.why_infeasible.rfind(prefix, 0) == 0) planned.why_infeasible.erase(0, prefix.size());
    }
    if (!planned.feasible) {
        point["feasible"] = false;
        point["why_not"] = planned.why_infeasible;
        std::fprintf(stderr, "[%zu/%zu] ranks %d %s: no plan (%s)\n", index, count, ranks, shape.c_str(), planned.why_infeasible.c_str());
        return point;
    }
    const Plan& plan = planned.plan;
    point["feasible"] = true;
    point["plan"] = plan.shape;
    const fs::path plan_file = s.out / fmt::format("plan-r{}-{}.json", ranks, shape);
    std::ofstream(plan_file) << plan_to_json(plan).dump(2) << '\n';

    json measured;
    if (!s.predict) {
        const fs::path result = s.out / fmt::format("result-r{}-{}.json", ranks, shape);
        const fs::path log = s.out / fmt::format("log-r{}-{}.txt", ranks, shape);
        std::vector<std::string> launcher = {s.mpirun};
        launcher.insert(launcher.end(), s.mpirun_flags.begin(), s.mpirun_flags.end());
        if (ranks > host_cpus()) launcher.push_back("--oversubscribe");
        launcher.insert(launcher.end(), {"--bind-to", "none", "-np", std::to_string(ranks)});
        const int threads = s.threads > 0 ? s.threads : std::max(1, host_cpus() / ranks);
        std::fprintf(stderr, "[%zu/%zu] ranks %d %s (%s)%s%s: running ...", index, count, ranks, shape.c_str(), plan.shape.c_str(),
                     s.http ? " through HTTP" : "",
                     ranks > host_cpus() ? fmt::format(", {} ranks on {} CPUs: oversubscribed", ranks, host_cpus()).c_str() : "");
        std::fflush(stderr);
        const auto t0 = std::chrono::steady_clock::now();
        if (s.http) {
            HttpBenchRun run{launcher, self_path(), s.model, s.format, s.cuda, plan_file, log, s.workload, threads, s.deadline};
            try {
                measured = run_http_bench(run);
            } catch (const Error&) {
                std::fprintf(stderr, " FAILED\n");
                throw;
            }
            std::fprintf(stderr, " done in %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        } else {
            std::vector<std::string> argv = launcher;
            std::string batches;
            for (int64_t b : s.workload.batches) batches += (batches.empty() ? "" : ",") + std::to_string(b);
            argv.insert(argv.end(), {self_path(), "bench", "--worker", "--model", s.model, "--plan", plan_file.string(),
                                     "--result", result.string(), "--prompt-tokens", std::to_string(s.workload.prompt_tokens),
                                     "--decode-tokens", std::to_string(s.workload.decode_tokens), "--deadline",
                                     fmt::format("{}", s.deadline), "--threads", std::to_string(threads), "--batches", batches});
            if (!s.format.empty()) argv.insert(argv.end(), {"--format", s.format});
            if (s.cuda) argv.insert(argv.end(), {"--devices", "cuda"});
            const int rc = run_logged(argv, log, 60 * s.deadline);
            const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, " %s in %.1f s\n", rc == 0 ? "done" : "FAILED", took);
            TPS_CHECK_AS(InputError, rc == 0, "ranks {} {}: mpirun exited with {} (log {}):\n{}", ranks, shape, rc, log.string(), tail_of(log));
            std::ifstream in(result);
            measured = json::parse(in, nullptr, false);
        }
        TPS_CHECK_AS(InputError, measured.is_object(), "ranks {} {}: no result in {}", ranks, shape, result.string());
    }

    const int64_t context = s.workload.prompt_tokens + s.workload.decode_tokens / 2;
    const Efficiency* gpu = s.gpu ? &*s.gpu : nullptr;
    const WorkloadEstimate pre = estimate_workload(model, plan, 1, context, s.workload.prompt_tokens, gpu);
    point["prefill_s"] = pair(measured.is_object() ? std::optional<double>(measured["prefill_s"].get<double>()) : std::nullopt, pre.prefill_s);
    point["batches"] = json::array();
    for (size_t i = 0; i < s.workload.batches.size(); ++i) {
        const int64_t batch = s.workload.batches[i];
        const WorkloadEstimate e = estimate_workload(model, plan, batch, context, s.workload.prompt_tokens, gpu);
        json b = {{"batch", batch}};
        double predicted_tps = e.decode_tps, predicted_tpot = e.time_per_token_s;
        if (s.http) {
            // through HTTP the rate is end to end: all B prompts read (B prefills of P tokens:
            // linear in tokens, attention within each prompt), then N tokens each
            const double n = static_cast<double>(s.workload.decode_tokens);
            predicted_tpot = static_cast<double>(batch) * pre.prefill_s / n + e.time_per_token_s;
            predicted_tps = static_cast<double>(batch) / predicted_tpot;
        }
        std::optional<double> tps, tpot;
        if (measured.is_object()) {
            const json& m = measured["batches"].at(i);
            tps = m["tokens_per_s"].get<double>();
            tpot = m["time_per_token_s"].get<double>() * 1e3;
            b["ranks_detail"] = m["ranks"];
            double wall = m["wall_s"].get<double>(), collective = 0, idle = 0;
            for (const auto& r : m["ranks"]) {
                collective += r["collective_s"].get<double>();
                idle += r["idle_s"].get<double>();
            }
            const bool split = !m["ranks"].empty();  // not in --http mode: the server's /metrics has them
            b["collective_fraction"] = split ? json(collective / (wall * ranks)) : json(nullptr);
            b["idle_fraction"] = split ? json(idle / (wall * ranks)) : json(nullptr);
        }
        b["tokens_per_s"] = pair(tps, predicted_tps);
        b["time_per_token_ms"] = pair(tpot, predicted_tpot * 1e3);
        b["micro_batches"] = e.micro_batches;
        point["batches"].push_back(std::move(b));
    }
    if (measured.is_object()) point["memory"] = measured["memory"];
    return point;
}

// Speedup and efficiency against the one-rank point (or, when one card cannot hold the model,
// the fewest ranks that can: efficiency is then per rank added beyond those), deviations, flags.
void compare(json& results) {
    json& points = results["points"];
    const json* base = nullptr;
    for (const auto& p : points) {
        if (p["shape"] == "auto" && p["feasible"] == true && (!base || p["ranks"] < (*base)["ranks"])) base = &p;
    }
    results["baseline_ranks"] = base ? json((*base)["ranks"]) : json(nullptr);
    const int base_ranks = base ? (*base)["ranks"].get<int>() : 1;
    json flags = json::array();
    for (auto& p : points) {
        if (p["feasible"] != true) continue;
        const int ranks = p["ranks"].get<int>();
        for (size_t i = 0; i < p["batches"].size(); ++i) {
            json& b = p["batches"][i];
            for (const char* side : {"measured", "predicted"}) {
                const json& mine = b["tokens_per_s"][side];
                const json* one = base ? &(*base)["batches"][i]["tokens_per_s"][side] : nullptr;
                if (mine.is_null() || !one || one->is_null()) {
                    b["speedup"][side] = nullptr;
                    b["efficiency"][side] = nullptr;
                    continue;
                }
                const double speedup = mine.get<double>() / one->get<double>();
                b["speedup"][side] = speedup;
                b["efficiency"][side] = speedup * base_ranks / ranks;
            }
            const json& m = b["tokens_per_s"]["measured"];
            const double pred = b["tokens_per_s"]["predicted"].get<double>();
            if (m.is_null()) continue;
            if (base) {
                // the cost model scaled by the one-rank measurement: what is left is its scaling
                const json& one = (*base)["batches"][i]["tokens_per_s"];
                b["tokens_per_s"]["calibrated"] = pred * one["measured"].get<double>() / one["predicted"].get<double>();
            }
            const double dev = (m.get<double>() - pred) / pred;
            b["deviation"] = dev;
            b["flagged"] = std::abs(dev) > kFlagDeviation;
            if (b["flagged"] == true) {
                flags.push_back(fmt::format("ranks {} {} ({}), batch {}: measured {:.1f} tok/s is {:.0f}% {} the predicted {:.1f}",
                                            ranks, p["shape"].get<std::string>(), p["plan"].get<std::string>(), b["batch"].get<int64_t>(),
                                            m.get<double>(), std::abs(dev) * 100, dev < 0 ? "below" : "above", pred));
            }
        }
        if (p.contains("memory")) {
            for (auto& r : p["memory"]) {
                const double a = r["actual"]["total"].get<double>(), q = r["predicted"]["total"].get<double>();
                r["deviation"] = q > 0 ? (a - q) / q : 0.0;
            }
        }
        const json& pre = p["prefill_s"];
        if (!pre["measured"].is_null()) {
            const double dev = (pre["measured"].get<double>() - pre["predicted"].get<double>()) / pre["predicted"].get<double>();
            p["prefill_s"]["deviation"] = dev;
            if (std::abs(dev) > kFlagDeviation) {
                flags.push_back(fmt::format("ranks {} {} ({}), prefill of {} tokens: measured {:.3f} ms is {:.0f}% {} the predicted {:.3f} ms",
                                            ranks, p["shape"].get<std::string>(), p["plan"].get<std::string>(),
                                            results["workload"]["prompt_tokens"].get<int64_t>(), pre["measured"].get<double>() * 1e3,
                                            std::abs(dev) * 100, dev > 0 ? "above" : "below", pre["predicted"].get<double>() * 1e3));
            }
        }
    }
    results["flags"] = flags;
}

std::string today() {
    const std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
    return buf;
}

}  // namespace

int run_bench(int argc, char** argv) {
    cxxopts::Options options("tpserve bench",
                             "Measure how throughput and latency scale from one rank to several, beside the cost model's "
                             "prediction (docs/bench.md).");
    options.set_width(100);
    // clang-format off
    options.add_options()
        ("m,model", "HF model directory or .gguf file (with --predict also a preset)", cxxopts::value<std::string>())
        ("ranks", "world sizes, starting with 1", cxxopts::value<std::string>()->default_value("1,2,4"))
        ("shapes", "auto (the planner's best), and forced tp, pp, tpxpp", cxxopts::value<std::string>()->default_value("auto"))
        ("devices", "what the measured runs use: cpu, or cuda (this machine's GPUs, rank r on GPU r)", cxxopts::value<std::string>()->default_value("cpu"))
        ("predict", "run nothing: the cost model's figures for --gpus")
        ("http", "measure through the HTTP server (tpserve serve) with streaming clients, one per sequence")
        ("gpus", "with --predict: the cards (e.g. 4xrtx5090); the first R for R ranks. With --devices cuda: this machine's GPUs, for cards the catalog lacks (name:mem_gb:bw_gbs:tflops)", cxxopts::value<std::string>())
        ("format", "weight format of the layers: measured runs quantize to it as they load (int8, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k ... q6_k, bf16, f16, f32); with --predict any the planner knows (fp8, int4, iq4_xs, ...)", cxxopts::value<std::string>())
        ("calibrate", "with --predict: a GPU's measured efficiencies (JSON, from scripts/gpu-check)", cxxopts::value<std::string>())
        ("prompt-tokens", "prompt length P", cxxopts::value<std::string>()->default_value("128"))
        ("decode-tokens", "tokens decoded per sequence N", cxxopts::value<std::string>()->default_value("32"))
        ("batches", "decode batch sizes", cxxopts::value<std::string>()->default_value("1,8,32"))
        ("quick", "a small workload (P 16, N 8, batches 1,4), for tests")
        ("o,out", "folder for bench.json, bench.md, bench.png, the plans and logs", cxxopts::value<std::string>()->default_value("bench-out"))
        ("mpirun", "the MPI launcher", cxxopts::value<std::string>()->default_value("mpirun"))
        ("kv-dtype", "KV cache type: f32, f16, bf16", cxxopts::value<std::string>()->default_value("f32"))
        ("deadline", "seconds any rank waits on another", cxxopts::value<std::string>()->default_value("120"))
        ("worker", "(internal) one measurement under mpirun")
        ("plan", "(with --worker) the plan", cxxopts::value<std::string>())
        ("result", "(with --worker) where rank 0 writes the result", cxxopts::value<std::string>())
        ("threads", "threads per rank (0 = the host's CPUs shared by the ranks: one rank gets them all)", cxxopts::value<std::string>()->default_value("0"))
        ("h,help", "show this help");
    // clang-format on
    const auto args = parse(options, argc, argv);
    if (args.count("help")) {
        std::fputs(options.help().c_str(), stdout);
        return kExitOk;
    }
    if (args.count("worker")) {
        BenchWorkerSettings w;
        TPS_CHECK_AS(UsageError, args.count("model") && args.count("plan") && args.count("result"),
                     "--worker needs --model, --plan and --result");
        w.model_path = args["model"].as<std::string>();
        w.plan_file = args["plan"].as<std::string>();
        if (args.count("format")) w.format = args["format"].as<std::string>();
        w.cuda = args["devices"].as<std::string>() == "cuda";
        w.result_file = args["result"].as<std::string>();
        w.workload.prompt_tokens = int_flag(args, "prompt-tokens", 1, 1 << 16);
        w.workload.decode_tokens = int_flag(args, "decode-tokens", 2, 1 << 16);
        w.workload.batches = int_list("batches", args["batches"].as<std::string>(), 1, 4096);
        w.threads = static_cast<int>(int_flag(args, "threads", 0, 1024));
        w.deadline = seconds_flag(args, "deadline");
        return run_bench_worker(w);
    }
    Settings s = read_settings(args);
    TPS_CHECK_AS(UsageError, !launched_by_mpi(), "tpserve bench starts mpirun itself; run it without mpirun");
    if (!s.predict && ::geteuid() == 0) s.mpirun_flags.push_back("--allow-run-as-root");

    ModelDesc model;
    std::string model_name;
    std::optional<DType> format;
    if (!s.format.empty()) {
        format = parse_dtype(s.format);
        TPS_CHECK_AS(UsageError, format.has_value(), "--format: '{}' is not a weight format (bf16, fp16, fp8, int8, int4, ...)",
                     s.format);
    }
    if (s.predict) {
        model = load_model(s.model);
        if (format) apply_weight_format(model, *format);
    } else {
        // measured runs quantize at load as serve does: refused here, once, if the engine cannot
        model = open_model(s.model, format).desc;
    }
    // the devices measured on, named; with --devices cuda the GPUs are counted before anything runs
    std::string devices = "cpu";
    if (s.cuda) {
        devices.clear();
        for (const auto& d : measured_gpus(s.gpus, s.ranks.back())) devices += (devices.empty() ? "" : ",") + d.name;
    }
    model_name = fs::path(s.model).filename().string();
    if (model_name.empty()) model_name = fs::path(s.model).parent_path().filename().string();

    std::error_code ec;
    fs::create_directories(s.out, ec);
    TPS_CHECK_AS(UsageError, !ec, "--out: cannot create '{}': {}", s.out.string(), ec.message());

    json results = {{"tool", "tpserve bench"},
                    {"date", today()},
                    {"model", model_name},
                    {"weight_format", weight_format_summary(model)},
                    {"mode", s.predict ? "predicted" : "measured"},
                    {"path", s.http ? "http" : "engine"},
                    {"devices", s.predict ? s.gpus : devices},
                    {"host_cpus", host_cpus()},
                    {"workload", {{"prompt_tokens", s.workload.prompt_tokens},
                                  {"decode_tokens", s.workload.decode_tokens},
                                  {"batches", s.workload.batches}}},
                    {"calibration", s.predict ? (s.gpu ? s.calibration_source
                                                       : std::string("none: no GPU measurement given (--calibrate FILE; docs/gpu/ "
                                                                     "holds what scripts/gpu-check measured), so the cost model's "
                                                                     "default efficiencies stand (docs/planner.md)"))
                                              : s.cuda ? std::string("the cost model uses the catalog's figures for these GPUs "
                                                                     "(docs/planner.md); the calibrated column also scales them "
                                                                     "by the one-rank measurement")
                                                       : std::string("the cost model uses this host's bandwidth and FMA rate, "
                                                                     "measured when planning; the calibrated column also "
                                                                     "scales it by the one-rank measurement")},
                    {"points", json::array()}};
    std::vector<std::tuple<int, std::string, std::vector<int>>> todo;
    for (int r : s.ranks) {
        for (const auto& shape : s.shapes) {
            if (const auto stages = shape_stages(shape, r)) todo.emplace_back(r, shape, *stages);
        }
    }
    for (size_t i = 0; i < todo.size(); ++i) {
        const auto& [r, shape, stages] = todo[i];
        results["points"].push_back(run_point(s, model, r, shape, stages, i + 1, todo.size()));
    }
    compare(results);

    std::ofstream(s.out / "bench.json") << results.dump(2) << '\n';
    const std::string md = bench_markdown(results);
    std::ofstream(s.out / "bench.md") << md;
    const std::string chart = bench_chart(results, s.out);
    std::fputs(md.c_str(), stdout);
    std::fprintf(stderr, "wrote %s, %s%s\n", (s.out / "bench.json").c_str(), (s.out / "bench.md").c_str(),
                 chart.empty() ? fmt::format(", {}", (s.out / "bench.png").string()).c_str()
                               : fmt::format(" (no chart: {})", chart).c_str());
    return kExitOk;
}

}  // namespace tps::cli
