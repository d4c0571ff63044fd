// Command-line plumbing shared by the subcommands: exit codes, strict flag-value parsing that
// names the flag, and turning cxxopts' exceptions into one-line usage errors.
#pragma once

#include "tpserve/common/check.h"
#include "tpserve/partition/dtype.h"

#include <cxxopts.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace tps::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;       // a file, the model or the machine is wrong
inline constexpr int kExitUsage = 2;       // a flag or its value is wrong
inline constexpr int kExitInfeasible = 3;  // `plan`: nothing fits the cards and bands

// Parses argv with `options`, rejecting unknown flags and stray positional arguments with a
// tps::UsageError whose message names them.
cxxopts::ParseResult parse(cxxopts::Options& options, int argc, char** argv);

// The value of a string flag parsed as an integer in [min, max]; UsageError naming the flag.
int64_t int_flag(const cxxopts::ParseResult& r, const std::string& flag, int64_t min, int64_t max);

// The value of a flag in seconds, in (0, 86400]; UsageError naming the flag.
double seconds_flag(const cxxopts::ParseResult& r, const std::string& flag);

// The flags of a command that runs a model in one process or split under mpirun: --threads,
// --backend, --device, --kv-dtype, --format, --plan, --gpus, --stages, --deadline.
void add_model_run_flags(cxxopts::Options& options);

// --threads of add_model_run_flags: 0 (the rank's share of its host) up to 4 per hardware thread.
int threads_flag(const cxxopts::ParseResult& r);
// --kv-dtype of add_model_run_flags: a KV type the CPU engine holds (f32, f16, bf16).
// --backend and --device (add_model_run_flags)
struct BackendChoice {
    bool cuda = false;
    int device = 0;  // in one process; under mpirun a rank takes its local rank's GPU
};
BackendChoice backend_flag(const cxxopts::ParseResult& r);
DType kv_dtype_flag(const cxxopts::ParseResult& r);
// --format of add_model_run_flags: the layers' weight format to quantize to at load; nullopt when
// not given (the checkpoint's own). UsageError for a name that is no format.
std::optional<DType> weight_format_flag(const cxxopts::ParseResult& r);

// "on"/"off"/"true"/"false"/"yes"/"no"/"1"/"0".
bool bool_flag(const cxxopts::ParseResult& r, const std::string& flag);

}  // namespace tps::cli
