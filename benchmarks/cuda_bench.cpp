// The GPU benchmark scripts/gpu-check runs: decode (batch 1, 8, 64 greedy; batch 1 and 64 sampled on
// the device, to show what sampling costs beside greedy) and prefill (512 tokens) of a
// model of Llama-3.2-1B's shape with seeded random weights, beside two ceilings measured on the
// same card: the bandwidth of a plain device-to-device copy and the rate of one large bf16 GEMM
// through cuBLAS. Prints a table, then each of layer 0's products and the LM head's timed alone
// (launched, and replayed from a graph), and q+k+v and gate+up as the model asks for them; --out
// DIR also writes cuda_bench-FORMAT.json there.
// --profile runs only a window for a profiler instead (one prefill, two decode steps at batch 1
// and at 64, between cudaProfilerStart and Stop: scripts/gpu-check's TPS_GPU_CHECK_PROFILE).
//
//   cuda_bench [--format bf16|f16|int8|q8_0|q4_0|q4_1|f32] [--steps N] [--out DIR] [--profile]
#include "tpserve/engine/backend.h"
#include "tpserve/engine/llama.h"
#include "tpserve/partition/hf_config.h"
#include "tpserve/partition/memory_model.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

#define BENCH_CHECK(stmt)                                                                              \
    do {                                                                                               \
        const auto bench_status_ = (stmt);                                                             \
        if (bench_status_ != 0) {                                                                      \
            std::fprintf(stderr, "cuda_bench: %s failed (status %d) at line %d\n", #stmt,              \
                         static_cast<int>(bench_status_), __LINE__);                                   \
            std::exit(1);                                                                              \
        }                                                                                              \
    } while (0)

// Llama-3.2-1B's hyper-parameters (its config.json: hidden 2048, 16 layers, 32 heads over 8 KV
// heads of 64, FFN 8192, vocabulary 128256, tied embeddings, llama3 RoPE scaling factor 32).
const char* kLlama32_1b = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
  "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
  "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
})";

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// The fastest of 5 timed rounds of `work` on `stream` (a first round warms up), seconds.
template <class Work>
double best_seconds(Work work, cudaStream_t stream = nullptr) {
    cudaEvent_t e0, e1;
    BENCH_CHECK(cudaEventCreate(&e0));
    BENCH_CHECK(cudaEventCreate(&e1));
    float best = 1e30f;
    for (int round = 0; round < 6; ++round) {
        BENCH_CHECK(cudaEventRecord(e0, stream));
        work();
        BENCH_CHECK(cudaEventRecord(e1, stream));
        BENCH_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        BENCH_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (round > 0) best = std::min(best, ms);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return best / 1e3;
}

// bytes moved per second by cudaMemcpyAsync device to device (read + write), best of 5 rounds
double copy_bandwidth() {
    const size_t bytes = size_t{1} << 30;
    void *a = nullptr, *b = nullptr;
    BENCH_CHECK(cudaMalloc(&a, bytes));
    BENCH_CHECK(cudaMalloc(&b, bytes));
    BENCH_CHECK(cudaMemset(a, 1, bytes));
    const double best = best_seconds([&] {
        for (int i = 0; i < 10; ++i) BENCH_CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice));
    });
    cudaFree(a);
    cudaFree(b);
    return 2.0 * static_cast<double>(bytes) * 10 / best;
}

// FLOP/s of an 8192^3 bf16 GEMM (f32 accumulation, bf16 out) through cuBLAS, best of 5
double gemm_rate() {
    const int n = 8192;
    const size_t elems = size_t{n} * n;
    void *a = nullptr, *b = nullptr, *c = nullptr;
    BENCH_CHECK(cudaMalloc(&a, elems * 2));
    BENCH_CHECK(cudaMalloc(&b, elems * 2));
    BENCH_CHECK(cudaMalloc(&c, elems * 2));
    {
        // random values: tensor-core timings on zeros flatter the card
        std::vector<__nv_bfloat16> h(elems);
        std::mt19937 rng(3);
        std::uniform_real_distribution<float> d(-1.0f, 1.0f);
        for (auto& x : h) x = __float2bfloat16(d(rng));
        BENCH_CHECK(cudaMemcpy(a, h.data(), elems * 2, cudaMemcpyHostToDevice));
        BENCH_CHECK(cudaMemcpy(b, h.data(), elems * 2, cudaMemcpyHostToDevice));
    }
    cublasHandle_t handle;
    BENCH_CHECK(cublasCreate(&handle));
    const float one = 1.0f, zero = 0.0f;
    const double best = best_seconds([&] {
        for (int i = 0; i < 5; ++i) {
            BENCH_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n,
                                     &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    });
    cublasDestroy(handle);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return 2.0 * n * static_cast<double>(n) * n * 5 / best;
}

struct Row {
    std::string what;
    double tokens_per_s = 0;
    double achieved = 0;  // bytes/s (decode) or FLOP/s (prefill)
    double ceiling = 0;
};

// One product of one matrix alone, as the model's backend runs it.
struct OpRow {
    std::string matrix;
    int64_t rows = 0, cols = 0, tokens = 0;
    double seconds = 0;         // replayed from a CUDA graph: the GPU's time alone
    double launched_seconds = 0;  // launched one by one: the host's launching (cuBLAS's too) included
    int64_t bytes = 0;  // the matrix's stored bytes (int8: with its scales)
};

// The fastest of 5 replays of `work` recorded as one CUDA graph on `stream` (as a decode step
// runs), seconds; 0 where the recording fails (the caller keeps the launched time).
template <class Work>
double best_graph_seconds(Work work, cudaStream_t stream) {
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    try {
        work();
    } catch (const std::exception&) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream, &broken);
        if (broken) cudaGraphDestroy(broken);
        cudaGetLastError();
        return 0;
    }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    const bool ok = cudaStreamEndCapture(stream, &graph) == cudaSuccess &&
                    cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph) cudaGraphDestroy(graph);
    if (!ok) {
        cudaGetLastError();
        return 0;
    }
    const double s = best_seconds([&] { BENCH_CHECK(cudaGraphLaunch(exec, stream)); }, stream);
    cudaGraphExecDestroy(exec);
    return s;
}

// Where a step's time goes: each of layer 0's products and the LM head's alone, on the model's
// stream, at the decode batches and (layers only) the prefill chunk, 20 back to back per round,
// launched and replayed from a graph; then q, k and v, and gate and up, as the model asks for
// them (one matmul_multi each: one GEMV launch, or one conversion of x for the GEMMs).
std::vector<OpRow> time_products(tps::Backend& gpu, const tps::LlamaWeights& w) {
    const tps::LayerWeights& l = w.layers.front();
    const std::pair<const char*, std::vector<const tps::Weight*>> matrices[] = {
        {"q", {&l.wq}}, {"k", {&l.wk}}, {"v", {&l.wv}}, {"o", {&l.wo}},
        {"gate", {&l.w_gate}}, {"up", {&l.w_up}}, {"down", {&l.w_down}}, {"lm_head", {&w.lm_head}},
        {"q+k+v", {&l.wq, &l.wk, &l.wv}}, {"gate+up", {&l.w_gate, &l.w_up}}};
    int64_t max_cols = 0, max_out = 0;
    for (const auto& [name, ms] : matrices) {
        int64_t rows = 0;
        for (const tps::Weight* m : ms) {
            max_cols = std::max(max_cols, m->cols);
            rows += m->rows;
        }
        max_out = std::max(max_out, rows * (ms.front() == &w.lm_head ? 64 : 512));
    }
    auto x = gpu.allocate(512 * max_cols * 4, tps::MemoryTag::activations);
    auto y = gpu.allocate(max_out * 4, tps::MemoryTag::activations);
    {
        std::vector<float> h(static_cast<size_t>(512 * max_cols));
        std::mt19937 rng(5);
        std::uniform_real_distribution<float> d(-1.0f, 1.0f);
        for (auto& v : h) v = d(rng);
        BENCH_CHECK(cudaMemcpy(x->data(), h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    }
    const auto stream = static_cast<cudaStream_t>(gpu.native_stream());
    std::vector<OpRow> out;
    for (const auto& [name, ms] : matrices) {
        for (const int64_t tokens : {1, 8, 64, 512}) {
            if (ms.front() == &w.lm_head && tokens > 64) continue;  // the model asks for 64 logit rows at most
            const int64_t cols = ms.front()->cols;
            const tps::Tensor xt{x->data(), tps::DType::f32, tokens, cols};
            // the products' outputs end to end in y
            std::vector<tps::Backend::Product> products;
            int64_t rows = 0, bytes = 0;
            for (const tps::Weight* m : ms) {
                products.push_back({m, tps::Tensor{static_cast<float*>(y->data()) + rows * tokens, tps::DType::f32, tokens,
                                                   m->rows}});
                rows += m->rows;
                bytes += m->bytes();
            }
            auto twenty = [&] { for (int i = 0; i < 20; ++i) gpu.matmul_multi(xt, products); };
            const double launched = best_seconds(twenty, stream) / 20;
            const double graphed = best_graph_seconds(twenty, stream) / 20;
            out.push_back({name, rows, cols, tokens, graphed > 0 ? graphed : launched, launched, bytes});
        }
    }
    gpu.synchronize();
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string format = "bf16", out_dir;
    int steps = 32;
    bool profile = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--profile") == 0) {
            profile = true;
            continue;
        }
        const bool known = std::strcmp(argv[i], "--format") == 0 || std::strcmp(argv[i], "--steps") == 0 ||
                           std::strcmp(argv[i], "--out") == 0;
        if (!known) {
            std::fprintf(stderr, "cuda_bench: unknown flag %s\n", argv[i]);
            return 2;
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "cuda_bench: %s needs a value\n", argv[i]);
            return 2;
        }
        const char* value = argv[++i];
        if (std::strcmp(argv[i - 1], "--format") == 0) format = value;
        else if (std::strcmp(argv[i - 1], "--steps") == 0) steps = std::max(4, std::atoi(value));
        else out_dir = value;
    }
    const auto type = tps::parse_dtype(format);
    if (!type || !tps::engine_stores(*type)) {
        std::fprintf(stderr, "cuda_bench: --format %s is not a weight format the engine quantizes to\n", format.c_str());
        return 2;
    }
    const std::string why = tps::cuda_backend_unavailable(0);
    if (!why.empty()) {
        std::fprintf(stderr, "cuda_bench: no usable GPU: %s\n", why.c_str());
        return 3;
    }
    try {
        cudaDeviceProp prop{};
        BENCH_CHECK(cudaGetDeviceProperties(&prop, 0));
        std::printf("card: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
                    static_cast<double>(prop.totalGlobalMem) / (1 << 30));
        const double copy_bw = copy_bandwidth();
        const double gemm = gemm_rate();
        std::printf("ceilings: device-to-device copy %.0f GB/s (read + write), cuBLAS bf16 GEMM 8192^3 %.0f TFLOP/s\n",
                    copy_bw / 1e9, gemm / 1e12);

        const tps::ModelDesc desc = tps::model_from_hf_config(nlohmann::json::parse(kLlama32_1b), "llama-3.2-1b-shape",
                                                             "cuda_bench");
        const auto t_make = clock_type::now();
        tps::LlamaWeights w = tps::make_random_llama_weights(desc, *type, 7);
        const int64_t weight_bytes = w.step_matrix_bytes();
        std::printf("model: Llama-3.2-1B shape, random %s weights, %.2f GB read per step (made in %.1f s)\n",
                    format.c_str(), static_cast<double>(weight_bytes) / 1e9, seconds_since(t_make));
        auto gpu = tps::make_cuda_backend(0);
        tps::ModelOptions opt;
        opt.max_step_tokens = 512;
        opt.max_logit_rows = 64;
        opt.kv_tokens = 64 * (64 + steps + 8) + 1024;
        opt.kv_dtype = tps::DType::bf16;
        tps::LlamaModel model(desc, std::move(w), *gpu, opt);

        std::mt19937 rng(1);
        std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(desc.vocab) - 1);
        auto random_tokens = [&](size_t n) {
            std::vector<int32_t> v(n);
            for (auto& t : v) t = tok(rng);
            return v;
        };
        std::vector<Row> rows;
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        // a 64-token prompt for each of `batch` sequences from `first_seq` on, then the batch's first
        // decode step: greedy, or sampled on the device (temperature 0.8, top-p 0.95, a repetition
        // penalty on the prompt's tokens)
        auto start_batch = [&](int batch, int first_seq, bool sampled) {
            std::vector<tps::SequenceStep> step;
            for (int s = first_seq; s < first_seq + batch; ++s) {
                const auto prompt = random_tokens(64);
                model.forward({{s, prompt, 0, false, tps::StepOutputKind::none}});
                step.push_back({s, {tok(rng)}, 64, false, sampled ? tps::StepOutputKind::sample : tps::StepOutputKind::greedy});
                if (sampled) {
                    step.back().sampling.temperature = 0.8f;
                    step.back().sampling.top_p = 0.95f;
                    const std::set<int32_t> seen(prompt.begin(), prompt.end());
                    for (int32_t t : seen) step.back().penalties.push_back({t, 1.1f, 0.0f});
                }
            }
            return step;
        };
        // runs one decode step of the batch and makes the next: one more random token per sequence
        auto advance = [&](std::vector<tps::SequenceStep>& step) {
            for (auto& e : step) e.sampling.u = unit(rng);
            model.forward(step);
            for (auto& e : step) {
                e.tokens = {tok(rng)};
                ++e.start_pos;
            }
        };

        if (profile) {
            // --profile: the steps a profiler looks at, between cudaProfilerStart and Stop (ncu
            // --profile-from-start off): one 512-token prefill, then two decode steps at batch 1
            // and at batch 64, each after untimed ones that record their graphs
            const auto prompt = random_tokens(512);
            model.forward({{5000, prompt, 0, false, tps::StepOutputKind::greedy}});
            model.release(5000);
            auto one = start_batch(1, 0, false), many = start_batch(64, 100, false);
            for (int i = 0; i < 3; ++i) {
                advance(one);
                advance(many);
            }
            BENCH_CHECK(cudaProfilerStart());
            model.forward({{5001, prompt, 0, false, tps::StepOutputKind::greedy}});
            for (int i = 0; i < 2; ++i) advance(one);
            for (int i = 0; i < 2; ++i) advance(many);
            BENCH_CHECK(cudaProfilerStop());
            std::printf("profiled: a 512-token prefill, 2 decode steps at batch 1, 2 at batch 64\n");
            return 0;
        }

        for (const auto& [batch, sampled] : {std::pair{1, false}, {8, false}, {64, false}, {1, true}, {64, true}}) {
            // `steps` decode steps of the whole batch, after 2 untimed ones (the second records the
            // step's CUDA graph)
            auto step = start_batch(batch, 0, sampled);
            advance(step);
            advance(step);
            const auto t0 = clock_type::now();
            for (int i = 0; i < steps; ++i) advance(step);
            const double per_step = seconds_since(t0) / steps;
            for (int s = 0; s < batch; ++s) model.release(s);
            rows.push_back({fmt::format("decode, batch {}{}", batch, sampled ? ", sampled" : ""), batch / per_step,
                            static_cast<double>(weight_bytes) / per_step, copy_bw});
        }

        {
            // prefill: one 512-token prompt, best of 5 after a warm-up
            const auto prompt = random_tokens(512);
            double best = 1e30;
            for (int rep = 0; rep < 6; ++rep) {
                const auto t0 = clock_type::now();
                model.forward({{1000 + rep, prompt, 0, false, tps::StepOutputKind::greedy}});
                const double s = seconds_since(t0);
                if (rep > 0) best = std::min(best, s);
                model.release(1000 + rep);
            }
            // FLOPs: every layer matmul for 512 tokens, the LM head for the last one, causal
            // attention (QK^T and PV over on average half the prompt)
            const double layer_params = static_cast<double>(weight_bytes) / (static_cast<double>(*tps::matrix_bytes(*type, 1, 32)) / 32.0) -
                                        static_cast<double>(desc.vocab * desc.hidden);
            const double flops = 2.0 * layer_params * 512 + 2.0 * static_cast<double>(desc.vocab * desc.hidden) +
                                 2.0 * 2.0 * 512.0 * 512.0 / 2.0 * static_cast<double>(desc.heads * desc.head_dim * desc.layers);
            rows.push_back({"prefill, 512 tokens", 512 / best, flops / best, gemm});
        }

        // memory: what the model holds for its steps against the planner's count for the same
        // shape, and what the card has in use beyond our allocations (the CUDA context, cuBLAS
        // and the driver: the planner's context constant)
        tps::ModelDesc planned_desc = desc;
        tps::apply_weight_format(planned_desc, *type);
        tps::ServingShape shape;
        shape.prefill_chunk = opt.max_step_tokens;
        shape.max_batch = opt.max_logit_rows;
        const int64_t planned = tps::activation_bytes(planned_desc, shape, 1, tps::DeviceKind::gpu, true, true);
        const tps::MemoryTotals held = tps::MemoryTracker::instance().totals();
        auto tag = [&](tps::MemoryTag t) { return held.current[static_cast<size_t>(t)]; };
        const int64_t steps_held = tag(tps::MemoryTag::activations) + tag(tps::MemoryTag::workspace);
        size_t free_bytes = 0, total_bytes = 0;
        BENCH_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
        const auto in_use = static_cast<int64_t>(total_bytes - free_bytes);
        const int64_t ours = held.current_total();
        constexpr double kMiB = 1048576.0;
        std::printf("memory: activations and step workspace %.1f MiB held, %.1f MiB planned; the card has %.0f MiB "
                    "in use, %.0f MiB of it our allocations, %.0f MiB the rest (context, cuBLAS, driver; the "
                    "planner assumes %.0f MiB of context)\n",
                    static_cast<double>(steps_held) / kMiB, static_cast<double>(planned) / kMiB,
                    static_cast<double>(in_use) / kMiB, static_cast<double>(ours) / kMiB,
                    static_cast<double>(in_use - ours) / kMiB, static_cast<double>(tps::kCudaContextBytes) / kMiB);

        std::printf("\n| %-25s | %10s | %22s | %9s |\n", "run", "tokens/s", "achieved", "of ceiling");
        std::printf("|%s|%s|%s|%s|\n", std::string(27, '-').c_str(), std::string(12, '-').c_str(),
                    std::string(24, '-').c_str(), std::string(11, '-').c_str());
        nlohmann::json j;
        j["card"] = prop.name;
        j["format"] = format;
        j["copy_bandwidth_bytes_per_s"] = copy_bw;
        j["bf16_gemm_flop_per_s"] = gemm;
        j["weight_bytes_per_step"] = weight_bytes;
        j["memory"] = {{"step_bytes_held", steps_held}, {"step_bytes_planned", planned}, {"card_bytes_in_use", in_use},
                       {"our_bytes", ours}};
        for (const Row& r : rows) {
            const bool decode = r.what.rfind("decode", 0) == 0;
            const std::string achieved = decode ? fmt::format("{:.0f} GB/s weights", r.achieved / 1e9)
                                                : fmt::format("{:.1f} TFLOP/s", r.achieved / 1e12);
            std::printf("| %-25s | %10.1f | %22s | %8.1f%% |\n", r.what.c_str(), r.tokens_per_s, achieved.c_str(),
                        100.0 * r.achieved / r.ceiling);
            j["runs"].push_back({{"run", r.what}, {"tokens_per_s", r.tokens_per_s}, {"achieved", r.achieved},
                                 {"ceiling", r.ceiling}, {"fraction", r.achieved / r.ceiling}});
        }
        auto write_json = [&] {
            if (out_dir.empty()) return;
            std::filesystem::create_directories(out_dir);
            std::ofstream(out_dir + "/cuda_bench-" + format + ".json") << j.dump(2) << "\n";
        };
        write_json();  // now, and again with the products: a CUDA error below exits the program

        // each product alone, after the memory line so its buffers are not counted there, and after
        // the table so a failure here loses nothing above
        std::vector<OpRow> ops;
        try {
            ops = time_products(*gpu, model.weights());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cuda_bench: timing the products alone failed: %s\n", e.what());
        }
        std::printf("\nproducts alone (layer 0's and the LM head's; %zu layers):\n", model.weights().layers.size());
        std::printf("| %-8s | %-13s | %6s | %9s | %11s | %14s | %11s |\n", "matrix", "shape", "tokens", "us", "launched us",
                    "weights GB/s", "TFLOP/s");
        for (const OpRow& o : ops) {
            std::printf("| %-8s | %6lld x %-4lld | %6lld | %9.1f | %11.1f | %14.0f | %11.1f |\n", o.matrix.c_str(),
                        static_cast<long long>(o.rows), static_cast<long long>(o.cols), static_cast<long long>(o.tokens),
                        o.seconds * 1e6, o.launched_seconds * 1e6, static_cast<double>(o.bytes) / o.seconds / 1e9,
                        2.0 * static_cast<double>(o.rows * o.cols * o.tokens) / o.seconds / 1e12);
        }
        // the products' share of a step: every layer's seven and the LM head, at each batch, each
        // alone and as the model asks for them
        const auto layers = static_cast<double>(model.weights().layers.size());
        for (const int64_t tokens : {1, 8, 64, 512}) {
            double alone = 0, grouped = 0;
            for (const OpRow& o : ops) {
                if (o.tokens != tokens) continue;
                // no LM-head row above 64 tokens: the model asks for 64 logit rows at most
                const double s = o.matrix == "lm_head" ? o.seconds : o.seconds * layers;
                const bool group = o.matrix.find('+') != std::string::npos;
                const bool in_group = o.matrix == "q" || o.matrix == "k" || o.matrix == "v" || o.matrix == "gate" ||
                                      o.matrix == "up";
                if (!group) alone += s;
                if (!in_group) grouped += s;
            }
            std::printf("products of one step at %lld tokens: %.1f us alone, %.1f us as the model asks (q+k+v, "
                        "gate+up)%s\n",
                        static_cast<long long>(tokens), alone * 1e6, grouped * 1e6, tokens > 64 ? " (layers only)" : "");
        }

        for (const OpRow& o : ops) {
            j["products"].push_back({{"matrix", o.matrix}, {"rows", o.rows}, {"cols", o.cols}, {"tokens", o.tokens},
                                     {"seconds", o.seconds}, {"launched_seconds", o.launched_seconds}, {"bytes", o.bytes}});
        }
        write_json();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "cuda_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
