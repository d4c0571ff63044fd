// CPU engine throughput on a model of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads,
// 3 KV heads, FFN 1536, vocabulary 49152, tied embeddings) with seeded random weights made on the
// spot, in f32, f16 and q8_0. Batch-1 decode is memory-bound: the weight bytes it reads per
// second are set beside this machine's read bandwidth, measured here with the same threads.
// Prefill (128 tokens) is set beside the measured f32 FMA peak. The machine's bandwidth drifts
// (a shared VM, between two levels from minute to minute), so each decode measurement is set
// between two bandwidth measurements, one just before and one just after; a round whose two
// differ by more than 8% saw the level change and is measured again (up to 15 tries). Five
// steady rounds; the median ratio is reported.
// --moe E,K makes each layer's FFN E experts of that width, K per token (Mixtral's layout): a
// decode step then reads the router and K experts per layer, and those are the bytes counted.
// --wide widens the shape to hidden 768, 12 heads / 4 KV heads of 64, FFN 2048 (the K-quants'
// 256-element blocks do not divide 576): the other formats can be run on it too, to compare.
//   build/release/benchmarks/engine_bench [--threads N] [--tokens N] [--formats f32,f16,q8_0] [--moe E,K] [--wide]
#include "tpserve/common/strings.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/llama.h"
#include "tpserve/partition/model_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <immintrin.h>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

template <class F>
double run_threads(int n, F&& f) {
    std::vector<std::thread> pool;
    const auto t0 = clock_type::now();
    for (int i = 0; i < n; ++i) pool.emplace_back(f, i);
    for (auto& t : pool) t.join();
    return seconds_since(t0);
}

// Read bandwidth: each thread sums its half of a 1 GiB buffer with AVX2 loads, 8 accumulators,
// and (PREFETCH) software prefetches 4 KiB ahead, which reads faster on this machine; the larger
// of the two is the machine's read bandwidth.
template <bool PREFETCH>
__attribute__((target("avx2"))) float sum_slice(const float* p, size_t n) {
    __m256 a[8];
    for (auto& x : a) x = _mm256_setzero_ps();
    for (size_t i = 0; i + 64 <= n; i += 64) {
        if constexpr (PREFETCH) {
            const char* ahead = reinterpret_cast<const char*>(p + i) + 4096;
            for (int line = 0; line < 4; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
        }
        for (int k = 0; k < 8; ++k) a[k] = _mm256_add_ps(a[k], _mm256_loadu_ps(p + i + 8 * k));
    }
    __m256 s = a[0];
    for (int k = 1; k < 8; ++k) s = _mm256_add_ps(s, a[k]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}

// Best of `passes` reads of a 1 GiB buffer (far beyond any cache), each thread its own half.
double read_bandwidth(int threads, const std::vector<float>& buf, int passes) {
    const size_t n = buf.size();
    std::vector<float> sink(static_cast<size_t>(threads));
    double best = 1e30;
    for (int rep = 0; rep < passes; ++rep) {
        for (bool prefetch : {false, true}) {
            best = std::min(best, run_threads(threads, [&](int t) {
                                const size_t chunk = n / static_cast<size_t>(threads);
                                const float* p = buf.data() + chunk * static_cast<size_t>(t);
                                sink[static_cast<size_t>(t)] += prefetch ? sum_slice<true>(p, chunk) : sum_slice<false>(p, chunk);
                            }));
        }
    }
    return static_cast<double>(n * sizeof(float)) / best;
}

typedef float v8f __attribute__((vector_size(32)));
__attribute__((target("avx2,fma"))) float fma_chains(int64_t iters) {
    v8f acc[10];
    for (int c = 0; c < 10; ++c) acc[c] = v8f{} + static_cast<float>(c);
    const v8f mul = v8f{} + 0.999999f, add = v8f{} + 1e-7f;
    for (int64_t i = 0; i < iters; ++i) {
        for (int c = 0; c < 10; ++c) acc[c] = acc[c] * mul + add;
    }
    float s = 0;
    for (int c = 0; c < 10; ++c) s += acc[c][0];
    return s;
}

double fma_peak(int threads) {
    const int64_t iters = 20'000'000;
    std::vector<float> sink(static_cast<size_t>(threads));
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
        best = std::min(best, run_threads(threads, [&](int t) { sink[static_cast<size_t>(t)] += fma_chains(iters); }));
    }
    return 2.0 * 8 * 10 * static_cast<double>(iters) * threads / best;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2;
    int decode_tokens = 64;
    std::vector<tps::DType> formats = {tps::DType::f32, tps::DType::f16, tps::DType::q8_0};
    int64_t experts = 0, active = 0;
    bool wide = false;
    std::vector<int64_t> batches;
    for (int i = 1; i < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--wide") {
            wide = true;
            --i;  // (no value)
            continue;
        }
        if (i + 1 >= argc || (flag != "--threads" && flag != "--tokens" && flag != "--formats" && flag != "--moe" &&
                              flag != "--batches")) {
            std::fprintf(stderr,
                         "usage: engine_bench [--threads N] [--tokens N] [--formats f32,f16,q8_0] [--moe E,K] [--wide] "
                         "[--batches 8,32]\n");
            return 2;
        }
        if (flag == "--batches") {
            for (const std::string& b : tps::split(argv[i + 1], ',')) {
                const long long n = std::atoll(b.c_str());
                if (n < 1 || n > 64) {
                    std::fprintf(stderr, "engine_bench: --batches: '%s' is not a batch of 1 to 64\n", b.c_str());
                    return 2;
                }
                batches.push_back(n);
            }
        }
        if (flag == "--moe") {
            const auto parts = tps::split(argv[i + 1], ',');
            if (parts.size() != 2 || (experts = std::atoll(parts[0].c_str())) < 1 || (active = std::atoll(parts[1].c_str())) < 1 ||
                active > experts) {
                std::fprintf(stderr, "engine_bench: --moe: '%s' is not E,K with 1 <= K <= E\n", argv[i + 1]);
                return 2;
            }
        }
        if (flag == "--threads") threads = std::atoi(argv[i + 1]);
        if (flag == "--tokens") decode_tokens = std::atoi(argv[i + 1]);
        if (flag == "--formats") {
            formats.clear();
            for (const std::string& name : tps::split(argv[i + 1], ',')) {
                const auto type = tps::parse_dtype(name);
                if (!type || !tps::engine_stores(*type)) {
                    std::fprintf(stderr, "engine_bench: --formats: '%s' is not one of %s\n", name.c_str(),
                                 std::string(tps::engine_store_names()).c_str());
                    return 2;
                }
                formats.push_back(*type);
            }
        }
    }
    if (threads < 1 || decode_tokens < 1) {
        std::fprintf(stderr, "engine_bench: --threads and --tokens must be at least 1\n");
        return 2;
    }
    tps::ModelDesc desc = tps::load_model("smollm2-135m");
    desc.experts = experts;
    desc.experts_active = active;
    if (wide) {
        desc.hidden = 768;
        desc.heads = 12;
        desc.kv_heads = 4;
        desc.head_dim = 64;
        desc.intermediate = 2048;
    }
    const std::string shape = wide ? "SmolLM2-135M shape widened to hidden 768, 12 / 4 heads, FFN 2048" : "SmolLM2-135M shape";
    for (tps::DType type : formats) {
        if (!tps::matrix_bytes(type, desc.intermediate, desc.hidden) || !tps::matrix_bytes(type, desc.hidden, desc.intermediate)) {
            std::fprintf(stderr, "engine_bench: %s rows of %lld do not split into its %lld-element blocks (try --wide)\n",
                         std::string(tps::dtype_name(type)).c_str(), static_cast<long long>(desc.hidden),
                         static_cast<long long>(tps::dtype_layout(type).block));
            return 2;
        }
    }
    if (experts > 0) {
        std::printf("model: %s with %lld experts of FFN %lld per layer, %lld per token, random weights; %d threads\n",
                    shape.c_str(), static_cast<long long>(experts), static_cast<long long>(desc.intermediate),
                    static_cast<long long>(active), threads);
    } else {
        std::printf("model: %s, random weights; %d threads\n", shape.c_str(), threads);
    }
    const std::vector<float> bw_buffer(size_t{1} << 28, 1.0f);  // 1 GiB
    const double peak = fma_peak(threads);
    std::printf("machine: f32 FMA peak %.1f GFLOPS (%d threads, measured now); read bandwidth measured before each decode run\n\n",
                peak / 1e9, threads);
    std::printf("%-6s %10s %12s %12s %12s %9s %14s %10s %10s\n", "format", "weights MB", "decode tok/s", "weights GB/s",
                "read GB/s", "% of bw", "prefill tok/s", "GFLOPS", "% of peak");

    auto be = tps::make_cpu_backend(threads);
    std::mt19937 rng(1);
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(desc.vocab) - 1);
    for (tps::DType type : formats) {
        tps::LlamaWeights w = tps::make_random_llama_weights(desc, type, 7);
        const int64_t bytes = w.step_matrix_bytes();
        tps::ModelOptions opt;
        opt.max_step_tokens = 128;
        // the batch-1 rounds (16 + tokens), and the largest of --batches sequences of 16 + tokens
        const int64_t widest = batches.empty() ? 1 : *std::max_element(batches.begin(), batches.end());
        opt.kv_tokens = std::max<int64_t>(2048, widest * (16 + decode_tokens + 16));
        tps::LlamaModel model(desc, std::move(w), *be, opt);

        // prefill: 128 tokens, best of 3
        std::vector<int32_t> prompt(128);
        for (auto& t : prompt) t = tok(rng);
        double prefill = 1e30;
        for (int rep = 0; rep < 3; ++rep) {
            const auto t0 = clock_type::now();
            model.forward({{100 + rep, prompt, 0, false}});
            prefill = std::min(prefill, seconds_since(t0));
            model.release(100 + rep);
        }
        // decode: 16-token prompt, then batch-1 steps; the median step. Five steady rounds (the
        // bandwidth before and after within 8%), set against the mean of the two.
        constexpr size_t kRounds = 5;
        constexpr int kTries = 15;
        struct Round {
            double step, bw, ratio;
        };
        std::vector<Round> rounds;
        int unsteady = 0;
        for (int attempt = 0; rounds.size() < kRounds && attempt < kTries; ++attempt) {
            const double before = read_bandwidth(threads, bw_buffer, 3);
            std::vector<int32_t> start(16);
            for (auto& t : start) t = tok(rng);
            model.forward({{1, start, 0, false}});
            std::vector<double> steps;
            int32_t next = tok(rng);
            for (int i = 0; i < decode_tokens; ++i) {
                const auto t0 = clock_type::now();
                const tps::StepResult r = model.forward({{1, {next}, 16 + i, false}});
                steps.push_back(seconds_since(t0));
                next = static_cast<int32_t>(std::max_element(r.logits.begin(), r.logits.end()) - r.logits.begin());
            }
            model.release(1);
            const double after = read_bandwidth(threads, bw_buffer, 3);
            if (std::abs(before - after) > 0.08 * std::max(before, after) && attempt < kTries - 1) {
                ++unsteady;
                continue;
            }
            std::sort(steps.begin(), steps.end());
            const double step = steps[steps.size() / 2];
            const double bw = (before + after) / 2;
            rounds.push_back({step, bw, static_cast<double>(bytes) / step / bw});
        }
        while (rounds.size() < kRounds) rounds.push_back(rounds.back());  // (only when the tries ran out)
        std::sort(rounds.begin(), rounds.end(), [](const Round& a, const Round& b) { return a.ratio < b.ratio; });
        const double step = rounds[kRounds / 2].step;
        const double bw = rounds[kRounds / 2].bw;
        // bytes per weight over a whole block (32 elements, or a K-quant's 256)
        const int64_t n = std::max<int64_t>(32, tps::dtype_layout(type).block);
        const double per_token_flops =
            2.0 * static_cast<double>(bytes) / (static_cast<double>(*tps::matrix_bytes(type, 1, n)) / static_cast<double>(n));
        // prefill FLOPs: matmuls for 128 tokens (the LM head for one) + causal attention
        const double lm_head = 2.0 * static_cast<double>(desc.vocab * desc.hidden);
        const double layers_flops = (per_token_flops - lm_head) * 128 + lm_head +
                                    2.0 * 128 * 128 * static_cast<double>(desc.heads * desc.head_dim * desc.layers);
        std::printf("%-6s %10.1f %12.1f %12.2f %12.1f %8.1f%% %14.1f %10.1f %9.1f%%\n",
                    std::string(tps::dtype_name(type)).c_str(), static_cast<double>(bytes) / 1e6, 1.0 / step,
                    static_cast<double>(bytes) / step / 1e9, bw / 1e9, 100.0 * static_cast<double>(bytes) / step / bw,
                    128.0 / prefill, layers_flops / prefill / 1e9, 100.0 * layers_flops / prefill / peak);
        if (unsteady > 0) std::printf("       (%d decode round%s measured again: the bandwidth moved during it)\n", unsteady, unsteady == 1 ? "" : "s");
        // batched decode: B sequences after 16-token prompts, each step one token of every one;
        // the median of `decode_tokens` steps
        for (const int64_t b : batches) {
            for (int64_t s = 0; s < b; ++s) {
                std::vector<int32_t> start(16);
                for (auto& t : start) t = tok(rng);
                model.forward({{1000 + s, start, 0, false}});
            }
            std::vector<double> steps;
            std::vector<tps::SequenceStep> batch(static_cast<size_t>(b));
            for (int i = 0; i < decode_tokens; ++i) {
                for (int64_t s = 0; s < b; ++s) batch[static_cast<size_t>(s)] = {1000 + s, {tok(rng)}, 16 + i, false};
                const auto t0 = clock_type::now();
                model.forward(batch);
                steps.push_back(seconds_since(t0));
            }
            for (int64_t s = 0; s < b; ++s) model.release(1000 + s);
            std::sort(steps.begin(), steps.end());
            const double med = steps[steps.size() / 2];
            std::printf("       batch %lld decode: %.1f tok/s (%.2f ms a step, %.2f ms a token)\n", static_cast<long long>(b),
                        static_cast<double>(b) / med, med * 1e3, med * 1e3 / static_cast<double>(b));
        }
    }
    return 0;
}
