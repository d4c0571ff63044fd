#include "cli.h"

#include "tpserve/common/strings.h"

#include <fmt/format.h>

#include <thread>

namespace tps::cli {

cxxopts::ParseResult parse(cxxopts::Options& options, int argc, char** argv) {
    cxxopts::ParseResult result;
    try {
        result = options.parse(argc, argv);
    } catch (const cxxopts::exceptions::exception& e) {
        throw UsageError(e.what());
    }
    if (!result.unmatched().empty()) {
        throw UsageError(fmt::format("unexpected argument '{}'", result.unmatched().front()));
    }
    return result;
}

int64_t int_flag(const cxxopts::ParseResult& r, const std::string& flag, int64_t min, int64_t max) {
    const std::string text = r[flag].as<std::string>();
    const auto v = parse_int(text);
    TPS_CHECK_AS(UsageError, v.has_value(), "--{}: '{}' is not an integer", flag, text);
    TPS_CHECK_AS(UsageError, *v >= min && *v <= max, "--{}: {} is out of range ({}..{})", flag, *v, min, max);
    return *v;
}

double seconds_flag(const cxxopts::ParseResult& r, const std::string& flag) {
    const std::string text = r[flag].as<std::string>();
    const auto v = parse_double(text);
    TPS_CHECK_AS(UsageError, v && *v > 0 && *v <= 86400, "--{}: '{}' is not a number of seconds in (0, 86400]", flag, text);
    return *v;
}

void add_model_run_flags(cxxopts::Options& options) {
    // clang-format off
    options.add_options()
        ("threads", "CPU threads per rank (0 = the CPUs this rank may run on, shared with the host's other ranks)", cxxopts::value<std::string>()->default_value("0"))
        ("backend", "cpu, or cuda: one GPU per rank (under mpirun the host's ranks take GPUs 0, 1, ... in rank order)", cxxopts::value<std::string>()->default_value("cpu"))
        ("device", "in one process with --backend cuda: the GPU to use", cxxopts::value<std::string>()->default_value("0"))
        ("kv-dtype", "KV cache type: f32, f16, bf16", cxxopts::value<std::string>()->default_value("f32"))
        ("format", "quantize the layers' weights as they load: int8 (one scale per output row), q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, bf16, f16, f32 (default: as the checkpoint stores them; not for GGUF)", cxxopts::value<std::string>())
        ("plan", "under mpirun: the plan JSON (`tpserve plan --out`) every rank follows", cxxopts::value<std::string>())
        ("gpus", "without --plan: the devices to plan for (default: Nxcpu, N = ranks)", cxxopts::value<std::string>())
        ("stages", "with --gpus: only this shape, each stage's TP degree in order (2,1)", cxxopts::value<std::string>())
        ("deadline", "seconds any rank waits on another before it gives up and says who is missing", cxxopts::value<std::string>()->default_value("60"));
    // clang-format on
}

int threads_flag(const cxxopts::ParseResult& r) {
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return static_cast<int>(int_flag(r, "threads", 0, 4 * hardware));
}

BackendChoice backend_flag(const cxxopts::ParseResult& r) {
    const std::string backend = r["backend"].as<std::string>();
    TPS_CHECK_AS(UsageError, backend == "cpu" || backend == "cuda", "--backend: '{}' is not a backend (cpu, cuda)", backend);
    BackendChoice b;
    b.cuda = backend == "cuda";
    b.device = static_cast<int>(int_flag(r, "device", 0, 1023));
    TPS_CHECK_AS(UsageError, b.cuda || r["device"].count() == 0, "--device picks a GPU for --backend cuda");
    return b;
}

DType kv_dtype_flag(const cxxopts::ParseResult& r) {
    const std::string kv = r["kv-dtype"].as<std::string>();
    const auto type = parse_dtype(kv);
    TPS_CHECK_AS(UsageError, type && (*type == DType::f32 || *type == DType::f16 || *type == DType::bf16),
                 "--kv-dtype: '{}' is not f32, f16 or bf16", kv);
    return *type;
}

std::optional<DType> weight_format_flag(const cxxopts::ParseResult& r) {
    if (!r.count("format")) return std::nullopt;
    const std::string f = r["format"].as<std::string>();
    const auto type = parse_dtype(f);
    TPS_CHECK_AS(UsageError, type.has_value(), "--format: '{}' is not a weight format (int8, bf16, f16, f32, fp8, int4 or a GGML type: q8_0, q4_k, ...)", f);
    return type;
}

bool bool_flag(const cxxopts::ParseResult& r, const std::string& flag) {
    const std::string v = to_lower(r[flag].as<std::string>());
    if (v == "on" || v == "true" || v == "yes" || v == "1") return true;
    if (v == "off" || v == "false" || v == "no" || v == "0") return false;
    throw UsageError(fmt::format("--{}: '{}' is not on or off", flag, v));
}

}  // namespace tps::cli
