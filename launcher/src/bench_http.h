// `tpserve bench --http`: the same measurement through the HTTP server. For one plan it starts
// `mpirun -np R tpserve serve --plan ... --port 0`, waits for /health, runs the workload as
// concurrent streaming /v1/completions clients (one per sequence of the batch), reads each rank's
// memory from /v1/plan, stops rank 0 with SIGTERM (the server's orderly stop) and returns what it
// measured in the worker's result form (bench_worker.h).
#pragma once

#include "bench_worker.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace tps::cli {

struct HttpBenchRun {
    std::vector<std::string> mpirun;  // the launcher and its flags, up to -np R included
    std::string tpserve;              // this binary
    std::string model_path;
    std::string format;  // --format for the server, "" for the checkpoint's own
    bool cuda = false;   // --backend cuda for the server
    std::filesystem::path plan_file;
    std::filesystem::path log;
    BenchWorkload workload;
    int threads = 1;
    double deadline = 120;
};

nlohmann::json run_http_bench(const HttpBenchRun& run);

}  // namespace tps::cli
