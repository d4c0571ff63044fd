// Seeded random weights of a model's shape, stored in a chosen format, made in memory: what the
// benchmarks and the GPU check run on when no checkpoint is at hand. Values are N(0, 0.02) like
// transformers' initializer, norms are 1.
#include "tpserve/common/check.h"
#include "tpserve/engine/llama.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

namespace tps {
namespace {

Weight random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937_64& rng) {
    std::normal_distribution<float> d(0.0f, 0.02f);
    Weight w = make_weight(type, rows, cols, MemoryTag::weights);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        for (auto& x : row) x = d(rng);
        store_row(w, r, row.data());
    }
    return w;
}

Vec ones(int64_t n) {
    Vec v;
    v.n = n;
    v.buf = Buffer(n * 4, MemoryTag::weights);
    std::fill(v.buf.as<float>(), v.buf.as<float>() + n, 1.0f);
    return v;
}

}  // namespace

LlamaWeights make_random_llama_weights(const ModelDesc& m, DType type, uint64_t seed) {
    TPS_CHECK_AS(UsageError, engine_stores(type), "random weights: {} is not a format the engine quantizes to ({})",
                 dtype_name(type), engine_store_names());
    LlamaWeights w;
    const int64_t hd = m.head_dim;
    // int8 is a format for the layers (--format int8 keeps the embedding and LM head in the
    // checkpoint's type): bf16 for those, so benchmarks measure what serving runs
    const DType outer = type == DType::int8 ? DType::bf16 : type;
    // every matrix is a job with its own seed, drawn in a fixed order, so the weights are the same
    // however many threads make them (a 1B model takes half a minute on one core)
    struct Job {
        Weight* out;
        DType type;
        int64_t rows, cols;
        uint64_t seed;
    };
    std::vector<Job> jobs;
    std::mt19937_64 seeds(seed);
    auto job = [&](Weight& out, DType t, int64_t rows, int64_t cols) { jobs.push_back({&out, t, rows, cols, seeds()}); };
    job(w.embedding, outer, m.vocab, m.hidden);
    if (!m.tied_embeddings) job(w.lm_head, outer, m.vocab, m.hidden);
    w.final_norm = ones(m.hidden);
    w.layers.resize(static_cast<size_t>(m.layers));
    for (LayerWeights& L : w.layers) {
        L.attn_norm = ones(m.hidden);
        L.ffn_norm = ones(m.hidden);
        job(L.wq, type, m.heads * hd, m.hidden);
        job(L.wk, type, m.kv_heads * hd, m.hidden);
        job(L.wv, type, m.kv_heads * hd, m.hidden);
        job(L.wo, type, m.hidden, m.heads * hd);
        if (m.experts > 0) {
            job(L.router, outer, m.experts, m.hidden);  // (kept out of int8, as at load)
            L.experts_per_token = m.experts_active;
            L.experts.resize(static_cast<size_t>(m.experts));
            for (ExpertWeights& e : L.experts) {
                job(e.w_gate, type, m.intermediate, m.hidden);
                job(e.w_up, type, m.intermediate, m.hidden);
                job(e.w_down, type, m.hidden, m.intermediate);
            }
        } else {
            job(L.w_gate, type, m.intermediate, m.hidden);
            job(L.w_up, type, m.intermediate, m.hidden);
            job(L.w_down, type, m.hidden, m.intermediate);
        }
    }
    std::atomic<size_t> next{0};
    std::exception_ptr failed;
    std::mutex failed_mutex;
    auto work = [&] {
        for (size_t i = next++; i < jobs.size(); i = next++) {
            try {
                std::mt19937_64 rng(jobs[i].seed);
                *jobs[i].out = random_matrix(jobs[i].type, jobs[i].rows, jobs[i].cols, rng);
            } catch (...) {
                const std::lock_guard<std::mutex> lock(failed_mutex);
                if (!failed) failed = std::current_exception();
                next = jobs.size();  // the first failure is the one reported: stop making more
            }
        }
    };
    const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16);
    std::vector<std::thread> threads;
    try {
        for (size_t t = 1; t < std::min(n_threads, jobs.size()); ++t) threads.emplace_back(work);
    } catch (const std::system_error&) {
        // no more threads to be had: those started and this one make the rest
    }
    work();
    for (auto& t : threads) t.join();
    if (failed) std::rethrow_exception(failed);
    if (m.tied_embeddings) w.lm_head = w.embedding.alias();
    return w;
}

}  // namespace tps
