// Building, checking and summarising a ModelDesc. The tensor table built here for HF checkpoints
// uses the same names and shapes as the safetensors files, so weight bytes are exact to the byte.
#include "tpserve/partition/model.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace tps {
namespace {

TensorSpec weight(std::string name, TensorRole role, int64_t out, int64_t in, DType dtype,
                  int64_t experts = 1) {
    TensorSpec t;
    t.name = std::move(name);
    t.role = role;
    t.out = out;
    t.in = in;
    t.experts = experts;
    t.expert = experts > 1;
    t.dtype = dtype;
    t.linear = true;
    return t;
}

TensorSpec vec(std::string name, TensorRole role, int64_t n, DType dtype) {
    TensorSpec t;
    t.name = std::move(name);
    t.role = role;
    t.out = n;
    t.in = 1;
    t.dtype = dtype;
    return t;
}

int64_t tensor_bytes(const TensorSpec& t) {
    const auto b = matrix_bytes(t.dtype, t.out, t.in);
    TPS_CHECK_AS(InputError, b.has_value(), "tensor {} ({} x {}) does not split into {} blocks, or is too large",
                 t.name, t.out, t.in, dtype_name(t.dtype));
    int64_t total = 0;
    TPS_CHECK_AS(InputError, !__builtin_mul_overflow(*b, t.experts, &total), "tensor {} is too large", t.name);
    return total;
}

}  // namespace

void build_llama_tensors(ModelDesc& m, const LlamaVariant& v) {
    const DType dt = m.checkpoint_dtype;
    const int64_t q_out = m.heads * m.head_dim;
    const int64_t kv_out = m.kv_heads * m.head_dim;

    m.globals.clear();
    TensorSpec embed = vec("model.embed_tokens.weight", TensorRole::vocab, m.vocab, dt);
    embed.in = m.hidden;
    embed.placement = Placement::first_stage;
    m.globals.push_back(embed);
    TensorSpec norm = vec("model.norm.weight", TensorRole::replicated, m.hidden, dt);
    norm.placement = Placement::last_stage;
    m.globals.push_back(norm);
    if (!m.tied_embeddings) {
        TensorSpec head = vec("lm_head.weight", TensorRole::vocab, m.vocab, dt);
        head.in = m.hidden;
        head.placement = Placement::last_stage;
        m.globals.push_back(head);
    }

    m.layer_tensors.assign(static_cast<size_t>(m.layers), {});
    for (int64_t i = 0; i < m.layers; ++i) {
        auto& L = m.layer_tensors[static_cast<size_t>(i)];
        const std::string p = fmt::format("model.layers.{}.", i);
        L.push_back(vec(p + "input_layernorm.weight", TensorRole::replicated, m.hidden, dt));
        L.push_back(weight(p + "self_attn.q_proj.weight", TensorRole::column, q_out, m.hidden, dt));
        L.push_back(weight(p + "self_attn.k_proj.weight", TensorRole::kv_column, kv_out, m.hidden, dt));
        L.push_back(weight(p + "self_attn.v_proj.weight", TensorRole::kv_column, kv_out, m.hidden, dt));
        if (v.qkv_bias) {
            L.push_back(vec(p + "self_attn.q_proj.bias", TensorRole::column, q_out, dt));
            L.push_back(vec(p + "self_attn.k_proj.bias", TensorRole::kv_column, kv_out, dt));
            L.push_back(vec(p + "self_attn.v_proj.bias", TensorRole::kv_column, kv_out, dt));
        }
        L.push_back(weight(p + "self_attn.o_proj.weight", TensorRole::row, m.hidden, q_out, dt));
        if (v.o_bias) {
            // a row-parallel bias is added once, after the all-reduce: every rank keeps it whole
            L.push_back(vec(p + "self_attn.o_proj.bias", TensorRole::replicated, m.hidden, dt));
        }
        L.push_back(vec(p + "post_attention_layernorm.weight", TensorRole::replicated, m.hidden, dt));
        if (m.experts > 0) {
            const std::string e = p + "block_sparse_moe.";
            TensorSpec router = weight(e + "gate.weight", TensorRole::replicated, m.experts, m.hidden, dt);
            router.linear = false;  // tiny and precision-sensitive: kept in the checkpoint dtype
            L.push_back(router);
            L.push_back(weight(e + "experts.*.w1.weight", TensorRole::column, m.intermediate, m.hidden, dt, m.experts));
            L.push_back(weight(e + "experts.*.w3.weight", TensorRole::column, m.intermediate, m.hidden, dt, m.experts));
            L.push_back(weight(e + "experts.*.w2.weight", TensorRole::row, m.hidden, m.intermediate, dt, m.experts));
        } else {
            L.push_back(weight(p + "mlp.gate_proj.weight", TensorRole::column, m.intermediate, m.hidden, dt));
            L.push_back(weight(p + "mlp.up_proj.weight", TensorRole::column, m.intermediate, m.hidden, dt));
            L.push_back(weight(p + "mlp.down_proj.weight", TensorRole::row, m.hidden, m.intermediate, dt));
            if (v.mlp_bias) {
                L.push_back(vec(p + "mlp.gate_proj.bias", TensorRole::column, m.intermediate, dt));
                L.push_back(vec(p + "mlp.up_proj.bias", TensorRole::column, m.intermediate, dt));
                L.push_back(vec(p + "mlp.down_proj.bias", TensorRole::replicated, m.hidden, dt));
            }
        }
    }
}

void validate_hyperparameters(const ModelDesc& m) {
    // messages name the file (or preset) the model came from
    const std::string& n = m.source.empty() ? m.name : m.source;
    TPS_CHECK_AS(InputError, m.hidden > 0, "{}: hidden size must be positive (got {})", n, m.hidden);
    TPS_CHECK_AS(InputError, m.layers > 0, "{}: number of layers must be positive (got {})", n, m.layers);
    TPS_CHECK_AS(InputError, m.heads > 0, "{}: attention heads must be positive (got {})", n, m.heads);
    TPS_CHECK_AS(InputError, m.kv_heads > 0, "{}: KV heads must be positive (got {})", n, m.kv_heads);
    TPS_CHECK_AS(InputError, m.heads % m.kv_heads == 0,
                 "{}: {} attention heads are not a multiple of {} KV heads", n, m.heads, m.kv_heads);
    TPS_CHECK_AS(InputError, m.head_dim > 0, "{}: head dimension must be positive (got {})", n, m.head_dim);
    TPS_CHECK_AS(InputError, m.intermediate > 0, "{}: FFN size must be positive (got {})", n, m.intermediate);
    TPS_CHECK_AS(InputError, m.vocab > 0, "{}: vocabulary size must be positive (got {})", n, m.vocab);
    TPS_CHECK_AS(InputError, m.max_context > 0, "{}: context length must be positive (got {})", n, m.max_context);
    TPS_CHECK_AS(InputError, m.experts >= 0 && m.experts_active >= 0 && m.experts_active <= m.experts,
                 "{}: {} active experts out of {} is inconsistent", n, m.experts_active, m.experts);
    TPS_CHECK_AS(InputError, m.experts == 0 || m.experts_active > 0,
                 "{}: an MoE model with {} experts needs experts per token > 0", n, m.experts);
    // after the signs are known: products below cannot overflow
    auto bounded = [&](const char* what, int64_t v, int64_t max) {
        TPS_CHECK_AS(InputError, v <= max, "{}: {} {} is beyond any real model (at most {})", n, what, v, max);
    };
    bounded("hidden size", m.hidden, kMaxDimension);
    bounded("FFN size", m.intermediate, kMaxDimension);
    bounded("vocabulary size", m.vocab, kMaxDimension);
    bounded("number of layers", m.layers, kMaxLayers);
    bounded("attention heads", m.heads, kMaxDimension);
    bounded("attention width (heads x head dim)", m.heads * std::min(m.head_dim, kMaxDimension), kMaxDimension);
    bounded("number of experts", m.experts, kMaxExperts);
    bounded("context length", m.max_context, kMaxContext);
    TPS_CHECK_AS(InputError, m.max_context >= kMinContext || m.max_context <= 0,
                 "{}: context length {} is below one KV block ({} tokens)", n, m.max_context, kMinContext);
}

void validate_model(const ModelDesc& m) {
    validate_hyperparameters(m);
    const std::string& n = m.source.empty() ? m.name : m.source;
    TPS_CHECK_AS(InputError, static_cast<int64_t>(m.layer_tensors.size()) == m.layers,
                 "{}: {} layers declared but tensors found for {}", n, m.layers, m.layer_tensors.size());
    // Sums of bytes must stay far from overflow: count in long double, refuse the absurd.
    long double params = 0;
    for_each_tensor(m, [&](const TensorSpec& t) { params += static_cast<long double>(t.out) * t.in * t.experts; });
    TPS_CHECK_AS(InputError, params <= 1e15L, "{}: {:.3g} parameters is beyond any real model", n,
                 static_cast<double>(params));
    bool has_embedding = false;
    for (const auto& t : m.globals) {
        has_embedding |= t.role == TensorRole::vocab && t.placement == Placement::first_stage;
        (void)tensor_bytes(t);
    }
    TPS_CHECK_AS(InputError, has_embedding, "{}: no token embedding tensor", n);
    for (size_t i = 0; i < m.layer_tensors.size(); ++i) {
        TPS_CHECK_AS(InputError, !m.layer_tensors[i].empty(), "{}: layer {} has no tensors", n, i);
        for (const auto& t : m.layer_tensors[i]) (void)tensor_bytes(t);
    }
}

void apply_weight_format(ModelDesc& m, DType format) {
    TPS_CHECK_AS(UsageError, m.fixed_format.empty(), "--format: {} {}; drop --format", m.source, m.fixed_format);
    TPS_CHECK_AS(UsageError, is_planner_weight_format(format),
                 "--format: {} is not a weight format (use bf16, fp16, fp8, int8, int4 or a GGML type)",
                 dtype_name(format));
    for (auto& layer : m.layer_tensors) {
        for (auto& t : layer) {
            if (!t.linear) continue;
            TPS_CHECK_AS(UsageError, matrix_bytes(format, t.out, t.in).has_value(),
                         "--format {}: {} has rows of {} elements, not a multiple of the format's "
                         "{}-element blocks",
                         dtype_name(format), t.name, t.in, dtype_layout(format).block);
            t.dtype = format;
        }
    }
}

int64_t total_weight_bytes(const ModelDesc& m) {
    int64_t total = 0;
    for_each_tensor(m, [&](const TensorSpec& t) { total += tensor_bytes(t); });
    return total;
}

int64_t total_parameters(const ModelDesc& m) {
    int64_t total = 0;
    for_each_tensor(m, [&](const TensorSpec& t) { total += t.out * t.in * t.experts; });
    return total;
}

std::string weight_format_summary(const ModelDesc& m) {
    // Formats of the linear weights, most bytes first: "int8", or "q4_1 + q6_k" for mixed GGUFs.
    std::map<DType, int64_t> bytes;
    for (const auto& layer : m.layer_tensors) {
        for (const auto& t : layer) {
            if (t.linear) bytes[t.dtype] += tensor_bytes(t);
        }
    }
    std::vector<std::pair<int64_t, DType>> order;
    for (const auto& [dt, b] : bytes) order.emplace_back(b, dt);
    std::sort(order.rbegin(), order.rend());
    std::string out;
    for (const auto& [b, dt] : order) {
        if (!out.empty()) out += " + ";
        out += dtype_name(dt);
    }
    return out.empty() ? std::string(dtype_name(m.checkpoint_dtype)) : out;
}

std::string model_fingerprint(const ModelDesc& m) {
    // FNV-1a over a canonical text of what determines the shards; names of files do not count.
    std::string canon = fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}", m.architecture, m.hidden,
                                    m.intermediate, m.layers, m.heads, m.kv_heads, m.head_dim,
                                    m.vocab, m.experts, m.experts_active, m.tied_embeddings);
    for_each_tensor(m, [&](const TensorSpec& t) {
        canon += fmt::format("|{}:{}x{}x{}:{}", t.name, t.out, t.in, t.experts, dtype_name(t.dtype));
    });
    uint64_t h = 14695981039346656037ull;
    for (unsigned char c : canon) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return fmt::format("{:016x}", h);
}

std::vector<std::string> checkpoint_names(const TensorSpec& t) {
    const size_t star = t.name.find('*');
    if (t.experts <= 1 || star == std::string::npos) return {t.name};
    std::vector<std::string> out;
    for (int64_t e = 0; e < t.experts; ++e) out.push_back(t.name.substr(0, star) + std::to_string(e) + t.name.substr(star + 1));
    return out;
}

}  // namespace tps
