// Seeded random weights of a model's shape, stored in a chosen format, made in memory: what the
// benchmarks and the GPU check run on when no checkpoint is at hand. Values are N(0, 0.02) like
// transformers' initializer, norms are 1.
#include "tpserve/common/check.h"
#include "tpserve/engine/llama.h"

#include <random>

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
    std::mt19937_64 rng(seed);
    LlamaWeights w;
    const int64_t hd = m.head_dim;
    // int8 is a format for the layers (--format int8 keeps the embedding and LM head in the
    // checkpoint's type): bf16 for those, so benchmarks measure what serving runs
    const DType outer = type == DType::int8 ? DType::bf16 : type;
    w.embedding = random_matrix(outer, m.vocab, m.hidden, rng);
    w.lm_head = m.tied_embeddings ? w.embedding.alias() : random_matrix(outer, m.vocab, m.hidden, rng);
    w.final_norm = ones(m.hidden);
    for (int64_t l = 0; l < m.layers; ++l) {
        LayerWeights L;
        L.attn_norm = ones(m.hidden);
        L.ffn_norm = ones(m.hidden);
        L.wq = random_matrix(type, m.heads * hd, m.hidden, rng);
        L.wk = random_matrix(type, m.kv_heads * hd, m.hidden, rng);
        L.wv = random_matrix(type, m.kv_heads * hd, m.hidden, rng);
        L.wo = random_matrix(type, m.hidden, m.heads * hd, rng);
        if (m.experts > 0) {
            L.router = random_matrix(outer, m.experts, m.hidden, rng);  // (kept out of int8, as at load)
            L.experts_per_token = m.experts_active;
            for (int64_t e = 0; e < m.experts; ++e) {
                L.experts.push_back({random_matrix(type, m.intermediate, m.hidden, rng), random_matrix(type, m.intermediate, m.hidden, rng),
                                     random_matrix(type, m.hidden, m.intermediate, rng)});
            }
        } else {
            L.w_gate = random_matrix(type, m.intermediate, m.hidden, rng);
            L.w_up = random_matrix(type, m.intermediate, m.hidden, rng);
            L.w_down = random_matrix(type, m.hidden, m.intermediate, rng);
        }
        w.layers.push_back(std::move(L));
    }
    return w;
}

}  // namespace tps
