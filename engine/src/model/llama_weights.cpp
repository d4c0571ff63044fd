// Loads one shard of a Llama-family checkpoint by the sharding table of docs/planner.md: Q, gate,
// up split by output rows (Q by heads), K and V by KV heads (one head per rank, replicated, when
// there are fewer KV heads than ranks), O and down by input columns, the embedding and LM head
// by vocabulary rows. Every shape is checked against the model description first.
#include "tpserve/common/check.h"
#include "tpserve/engine/llama.h"
#include "tpserve/partition/memory_model.h"

namespace tps {
namespace {

struct Loader {
    const WeightSource& src;
    const ModelDesc& m;
    const ShardSpec& s;

    void expect_shape(const std::string& name, std::vector<int64_t> want) const {
        const auto got = src.shape(name);
        auto show = [](const std::vector<int64_t>& v) {
            std::string out = "[";
            for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
            return out + "]";
        };
        TPS_CHECK_AS(InputError, got == want, "{}: tensor {} has shape {}, the config implies {}", m.source, name,
                     show(got), show(want));
    }
    Weight rows(const std::string& name, int64_t out, int64_t in, Range r) const {
        expect_shape(name, {out, in});
        return src.matrix(name, r, {});
    }
    Weight cols(const std::string& name, int64_t out, int64_t in, Range c) const {
        expect_shape(name, {out, in});
        return src.matrix(name, {}, c);
    }
    Vec vec(const std::string& name, int64_t n, Range r = {}) const {
        expect_shape(name, {n});
        return src.vector(name, r);
    }
    std::optional<Vec> optional_vec(const std::string& name, int64_t n, Range r = {}) const {
        if (!src.has(name)) return std::nullopt;
        return vec(name, n, r);
    }
};

int64_t in_place(const Weight& w) {
    return !w.empty() && w.owned.data() == nullptr && w.device == nullptr ? w.bytes() : 0;
}

}  // namespace

std::vector<Weight*> LayerWeights::matrices() {
    std::vector<Weight*> out = {&wq, &wk, &wv, &wo};
    if (moe()) {
        out.push_back(&router);
        for (ExpertWeights& e : experts) out.insert(out.end(), {&e.w_gate, &e.w_up, &e.w_down});
    } else {
        out.insert(out.end(), {&w_gate, &w_up, &w_down});
    }
    return out;
}

std::vector<const Weight*> LayerWeights::matrices() const {
    std::vector<Weight*> all = const_cast<LayerWeights*>(this)->matrices();
    return {all.begin(), all.end()};
}

int64_t LlamaWeights::mapped_bytes() const noexcept {
    int64_t n = in_place(embedding);
    if (lm_head.data != embedding.data) n += in_place(lm_head);
    for (const auto& l : layers) {
        for (const Weight* w : l.matrices()) n += in_place(*w);
    }
    return n;
}

int64_t LlamaWeights::step_matrix_bytes() const noexcept {
    int64_t b = lm_head.bytes();
    for (const auto& l : layers) {
        if (!l.moe()) {
            for (const Weight* w : l.matrices()) b += w->bytes();
            continue;
        }
        for (const Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.router}) b += w->bytes();
        const ExpertWeights& e = l.experts.front();  // (experts are alike)
        b += l.experts_per_token * (e.w_gate.bytes() + e.w_up.bytes() + e.w_down.bytes());
    }
    return b;
}

void LlamaWeights::touch() const noexcept {
    volatile std::byte sink{};
    auto pages = [&](const Weight& w) {
        if (w.device) return;  // in a backend's memory already
        const int64_t bytes = w.bytes();
        for (int64_t at = 0; at < bytes; at += 4096) sink = w.data[at];
    };
    pages(embedding);
    pages(lm_head);
    for (const auto& l : layers) {
        for (const Weight* w : l.matrices()) pages(*w);
    }
    (void)sink;
}

void check_backend_computes(const ModelDesc& m, const Backend& backend) {
    TPS_CHECK_AS(UsageError, m.experts == 0 || backend.computes_experts(),
                 "'{}' is a mixture-of-experts model; the {} backend does not compute expert layers yet (the CPU backend "
                 "does: --backend cpu)",
                 m.name, backend.name());
    // every matrix's format (a GGUF's are the file's): refused here, before gigabytes load
    std::vector<std::string> refused;
    int64_t n_refused = 0;
    for_each_tensor(m, [&](const TensorSpec& t) {
        if (t.in <= 1 || backend.computes_with(t.dtype)) return;
        if (++n_refused <= 3) refused.push_back(fmt::format("{} ({})", t.name, dtype_name(t.dtype)));
    });
    TPS_CHECK_AS(UsageError, refused.empty(),
                 "'{}' stores weights in formats the {} backend does not compute with: {}{}; it reads {} (the CPU backend "
                 "reads {}: --backend cpu)",
                 m.name, backend.name(), fmt::join(refused, ", "),
                 n_refused > 3 ? fmt::format(" and {} more", n_refused - 3) : std::string(),
                 backend.weight_formats(), engine_format_names());
}

LlamaWeights load_llama_weights(std::shared_ptr<const WeightSource> source, const ModelDesc& m, const ShardSpec& s) {
    TPS_CHECK(source != nullptr, "no weight source");
    const WeightSource& src = *source;
    TPS_CHECK_AS(UsageError, s.tp >= 1 && s.tp_rank >= 0 && s.tp_rank < s.tp, "shard: tp rank {} of {}", s.tp_rank, s.tp);
    if (const auto why = tp_incompatibility(m, s.tp)) throw UsageError(fmt::format("shard: {}", *why));
    const int64_t last = s.last_layer < 0 ? m.layers : s.last_layer;
    TPS_CHECK_AS(UsageError, 0 <= s.first_layer && s.first_layer < last && last <= m.layers,
                 "shard: layers [{}, {}) outside the model's {}", s.first_layer, last, m.layers);
    const Loader L{src, m, s};
    const int64_t before = src.bytes_read();
    LlamaWeights w;
    const int64_t hd = m.head_dim;
    const int64_t q_rows = m.heads * hd / s.tp;
    const Range q_range{s.tp_rank * q_rows, (s.tp_rank + 1) * q_rows};
    // KV heads: a contiguous group per rank, or the one head this rank shares when replicated
    const int64_t kv_per_rank = kv_heads_per_rank(m, s.tp);
    const int64_t kv_first_head = m.kv_heads >= s.tp ? s.tp_rank * kv_per_rank : s.tp_rank / (s.tp / m.kv_heads);
    const Range kv_range{kv_first_head * hd, (kv_first_head + kv_per_rank) * hd};
    const int64_t ffn = m.intermediate / s.tp;
    const Range ffn_range{s.tp_rank * ffn, (s.tp_rank + 1) * ffn};
    const Range o_cols{s.tp_rank * q_rows, (s.tp_rank + 1) * q_rows};
    const auto [v0, v1] = vocab_slice(m.vocab, s.tp, s.tp_rank);

    if (s.first_stage) {
        w.embedding = L.rows("model.embed_tokens.weight", m.vocab, m.hidden, {v0, v1});
        w.embedding_first = v0;
    }
    if (s.last_stage) {
        w.final_norm = L.vec("model.norm.weight", m.hidden);
        if (m.tied_embeddings) {
            w.lm_head = s.first_stage ? w.embedding.alias()
                                      : L.rows("model.embed_tokens.weight", m.vocab, m.hidden, {v0, v1});
        } else {
            w.lm_head = L.rows("lm_head.weight", m.vocab, m.hidden, {v0, v1});
        }
        w.lm_head_first = v0;
    }
    if (m.rope.freq_factors_tensor) w.rope_factors = L.vec("rope_freqs.weight", hd / 2);

    for (int64_t l = s.first_layer; l < last; ++l) {
        const std::string p = fmt::format("model.layers.{}.", l);
        LayerWeights lw;
        lw.attn_norm = L.vec(p + "input_layernorm.weight", m.hidden);
        lw.ffn_norm = L.vec(p + "post_attention_layernorm.weight", m.hidden);
        lw.wq = L.rows(p + "self_attn.q_proj.weight", m.heads * hd, m.hidden, q_range);
        lw.wk = L.rows(p + "self_attn.k_proj.weight", m.kv_heads * hd, m.hidden, kv_range);
        lw.wv = L.rows(p + "self_attn.v_proj.weight", m.kv_heads * hd, m.hidden, kv_range);
        lw.wo = L.cols(p + "self_attn.o_proj.weight", m.hidden, m.heads * hd, o_cols);
        if (m.experts > 0) {
            // Mixtral's names: the router's rows whole on every rank (each routes every token), each
            // expert split by rows and columns as a dense FFN is
            const std::string moe = p + "block_sparse_moe.";
            lw.router = L.rows(moe + "gate.weight", m.experts, m.hidden, {0, m.experts});
            lw.experts_per_token = m.experts_active;
            for (int64_t e = 0; e < m.experts; ++e) {
                const std::string x = fmt::format("{}experts.{}.", moe, e);
                ExpertWeights ew;
                ew.w_gate = L.rows(x + "w1.weight", m.intermediate, m.hidden, ffn_range);
                ew.w_up = L.rows(x + "w3.weight", m.intermediate, m.hidden, ffn_range);
                ew.w_down = L.cols(x + "w2.weight", m.hidden, m.intermediate, ffn_range);
                lw.experts.push_back(std::move(ew));
            }
        } else {
            lw.w_gate = L.rows(p + "mlp.gate_proj.weight", m.intermediate, m.hidden, ffn_range);
            lw.w_up = L.rows(p + "mlp.up_proj.weight", m.intermediate, m.hidden, ffn_range);
            lw.w_down = L.cols(p + "mlp.down_proj.weight", m.hidden, m.intermediate, ffn_range);
        }
        if (auto b = L.optional_vec(p + "self_attn.q_proj.bias", m.heads * hd, q_range)) lw.bq = std::move(*b);
        if (auto b = L.optional_vec(p + "self_attn.k_proj.bias", m.kv_heads * hd, kv_range)) lw.bk = std::move(*b);
        if (auto b = L.optional_vec(p + "self_attn.v_proj.bias", m.kv_heads * hd, kv_range)) lw.bv = std::move(*b);
        // O and down biases (row-parallel) are whole on every rank; with tp > 1 the sharded forward
        // pass must add them once, after the all-reduce, not on every rank
        if (auto b = L.optional_vec(p + "self_attn.o_proj.bias", m.hidden)) lw.bo = std::move(*b);
        if (auto b = L.optional_vec(p + "mlp.gate_proj.bias", m.intermediate, ffn_range)) lw.b_gate = std::move(*b);
        if (auto b = L.optional_vec(p + "mlp.up_proj.bias", m.intermediate, ffn_range)) lw.b_up = std::move(*b);
        if (auto b = L.optional_vec(p + "mlp.down_proj.bias", m.hidden)) lw.b_down = std::move(*b);
        w.layers.push_back(std::move(lw));
    }
    w.checkpoint_bytes = src.bytes_read() - before;
    w.source = std::move(source);
    return w;
}

}  // namespace tps
