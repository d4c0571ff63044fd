// One measurement point of `tpserve bench`, run under mpirun (`tpserve bench --worker`): every
// rank loads its shard of the plan; rank 0 runs the fixed workload through the serving scheduler
// (the path the HTTP server uses, micro-batches included) and writes what it measured — prefill
// time of one prompt, decode tokens/s and time per output token at each batch size, each rank's
// time computing, in collectives and idle, and each rank's memory — as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tps::cli {

struct BenchWorkload {
    int64_t prompt_tokens = 128;
    int64_t decode_tokens = 32;
    std::vector<int64_t> batches{1, 8, 32};
};

struct BenchWorkerSettings {
    std::string model_path;
    std::string format;  // --format: the layers quantized at load ("" for the checkpoint's own)
    bool cuda = false;   // one GPU per rank (its local rank's), NCCL between them
    std::string plan_file;
    std::string result_file;
    BenchWorkload workload;
    int threads = 0;
    double deadline = 120;
};

// Every rank; rank 0 writes result_file.
int run_bench_worker(const BenchWorkerSettings& s);

}  // namespace tps::cli
