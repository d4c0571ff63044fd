// config.json -> ModelDesc. Defaults are the ones transformers' own config classes use
// (LlamaConfig, MistralConfig, Qwen2Config, MixtralConfig), so a config that omits a field
// means what it means to transformers.
#include "tpserve/partition/hf_config.h"

#include "tpserve/common/check.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

namespace tps {
namespace {

using nlohmann::json;

struct Reader {
    const json& j;
    const std::string& origin;

    const json* find(const char* key) const {
        const auto it = j.find(key);
        return it == j.end() || it->is_null() ? nullptr : &*it;
    }
    int64_t positive(const char* key) const {
        const json* v = find(key);
        TPS_CHECK_AS(InputError, v != nullptr, "{}: missing required field \"{}\"", origin, key);
        return positive_value(key, *v);
    }
    int64_t positive_or(const char* key, int64_t fallback) const {
        const json* v = find(key);
        return v ? positive_value(key, *v) : fallback;
    }
    int64_t positive_value(const char* key, const json& v) const {
        TPS_CHECK_AS(InputError, v.is_number_integer(), "{}: field \"{}\" must be an integer, got {}",
                     origin, key, v.dump());
        const int64_t x = v.get<int64_t>();
        TPS_CHECK_AS(InputError, x > 0, "{}: field \"{}\" must be positive, got {}", origin, key, x);
        return x;
    }
    bool boolean_or(const char* key, bool fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        TPS_CHECK_AS(InputError, v->is_boolean(), "{}: field \"{}\" must be true or false, got {}",
                     origin, key, v->dump());
        return v->get<bool>();
    }
    double number_or(const char* key, double fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        TPS_CHECK_AS(InputError, v->is_number() && std::isfinite(v->get<double>()),
                     "{}: field \"{}\" must be a number, got {}", origin, key, v->dump());
        return v->get<double>();
    }
    std::string string_or(const char* key, const std::string& fallback) const {
        const json* v = find(key);
        if (!v) return fallback;
        TPS_CHECK_AS(InputError, v->is_string(), "{}: field \"{}\" must be a string, got {}",
                     origin, key, v->dump());
        return v->get<std::string>();
    }
};

// quantization_config of AWQ / GPTQ (4-bit, group 128) and FP8 checkpoints: the weights are
// already in one of the planner's formats.
std::optional<DType> checkpoint_quantization(const Reader& r) {
    const json* q = r.find("quantization_config");
    if (!q) return std::nullopt;
    TPS_CHECK_AS(InputError, q->is_object(), "{}: \"quantization_config\" must be an object", r.origin);
    const Reader qr{*q, r.origin};
    const std::string method = qr.string_or("quant_method", "");
    if (method == "fp8") return DType::fp8;
    if (method == "awq" || method == "gptq") {
        const int64_t bits = qr.positive_or(method == "awq" ? "w_bit" : "bits", qr.positive_or("bits", 0));
        const int64_t group = qr.positive_or(method == "awq" ? "q_group_size" : "group_size",
                                             qr.positive_or("group_size", 0));
        TPS_CHECK_AS(InputError, bits == 4 && group == 128,
                     "{}: {} with {} bits and group size {} is not supported (int4 with group 128 is)",
                     r.origin, method, bits, group);
        return DType::int4;
    }
    TPS_CHECK_AS(InputError, false,
                 "{}: quantization_config.quant_method \"{}\" is not supported (awq, gptq, fp8 are); "
                 "plan the unquantized model with --format instead",
                 r.origin, method);
    return std::nullopt;
}

// rope_theta and rope_scaling ({"rope_type" or "type": "llama3" | "linear" | ...}); transformers
// >= 5 writes both inside one "rope_parameters" object instead.
RopeConfig read_rope(const Reader& r) {
    RopeConfig rope;
    const json* params = r.find("rope_parameters");
    TPS_CHECK_AS(InputError, !params || params->is_object(), "{}: \"rope_parameters\" must be an object", r.origin);
    const Reader pr{params ? *params : r.j, r.origin};
    rope.theta = params ? pr.number_or("rope_theta", r.number_or("rope_theta", 10000.0)) : r.number_or("rope_theta", 10000.0);
    TPS_CHECK_AS(InputError, rope.theta > 0, "{}: rope_theta must be positive", r.origin);
    const json* s = params ? params : r.find("rope_scaling");
    if (!s) return rope;
    TPS_CHECK_AS(InputError, s->is_object(), "{}: \"rope_scaling\" must be an object or null", r.origin);
    const Reader sr{*s, r.origin};
    rope.scaling = sr.string_or("rope_type", sr.string_or("type", "none"));
    if (rope.scaling == "default") rope.scaling = "none";
    rope.factor = sr.number_or("factor", 1.0);
    rope.low_freq_factor = sr.number_or("low_freq_factor", 1.0);
    rope.high_freq_factor = sr.number_or("high_freq_factor", 4.0);
    rope.original_max_position = sr.positive_or("original_max_position_embeddings", 8192);
    TPS_CHECK_AS(InputError, rope.factor > 0 && rope.low_freq_factor > 0 && rope.high_freq_factor > rope.low_freq_factor,
                 "{}: rope_scaling factors are inconsistent (factor {}, low {}, high {})", r.origin, rope.factor,
                 rope.low_freq_factor, rope.high_freq_factor);
    return rope;
}

}  // namespace

ModelDesc model_from_hf_config(const json& j, const std::string& name, const std::string& origin) {
    TPS_CHECK_AS(InputError, j.is_object(), "{}: expected a JSON object", origin);
    const Reader r{j, origin};
    ModelDesc m;
    m.name = name;
    m.source = origin;
    m.architecture = r.string_or("model_type", "");
    TPS_CHECK_AS(InputError, !m.architecture.empty(), "{}: missing required field \"model_type\"", origin);
    const bool llama = m.architecture == "llama";
    const bool qwen2 = m.architecture == "qwen2";
    const bool moe = m.architecture == "mixtral";
    TPS_CHECK_AS(InputError, llama || qwen2 || moe || m.architecture == "mistral",
                 "{}: model_type \"{}\" is not a supported Llama-family model (llama, mistral, qwen2, "
                 "mixtral)",
                 origin, m.architecture);

    m.hidden = r.positive("hidden_size");
    m.intermediate = r.positive("intermediate_size");
    m.layers = r.positive("num_hidden_layers");
    m.heads = r.positive("num_attention_heads");
    m.kv_heads = r.positive_or("num_key_value_heads", m.heads);
    m.vocab = r.positive("vocab_size");
    m.max_context = r.positive("max_position_embeddings");
    if (r.find("head_dim")) {
        m.head_dim = r.positive("head_dim");
    } else {
        TPS_CHECK_AS(InputError, m.hidden % m.heads == 0,
                     "{}: hidden_size {} does not divide by num_attention_heads {} and no head_dim is "
                     "given",
                     origin, m.hidden, m.heads);
        m.head_dim = m.hidden / m.heads;
    }
    TPS_CHECK_AS(InputError, m.heads % m.kv_heads == 0,
                 "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", origin,
                 m.heads, m.kv_heads);
    m.tied_embeddings = r.boolean_or("tie_word_embeddings", false);
    if (moe) {
        m.experts = r.positive("num_local_experts");
        m.experts_active = r.positive("num_experts_per_tok");
        TPS_CHECK_AS(InputError, m.experts_active <= m.experts,
                     "{}: num_experts_per_tok {} exceeds num_local_experts {}", origin,
                     m.experts_active, m.experts);
    }

    // transformers >= 4.56 writes "dtype"; older files "torch_dtype".
    std::string dtype = r.string_or("torch_dtype", r.string_or("dtype", ""));
    if (dtype.empty()) {
        dtype = "bfloat16";
        m.notes.push_back("config.json gives no torch_dtype; assumed bfloat16 weights");
    }
    const auto dt = parse_dtype(dtype);
    TPS_CHECK_AS(InputError, dt && (*dt == DType::f32 || *dt == DType::f16 || *dt == DType::bf16),
                 "{}: torch_dtype \"{}\" is not float32, float16 or bfloat16", origin, dtype);
    m.checkpoint_dtype = *dt;

    m.rms_norm_eps = r.number_or("rms_norm_eps", 1e-6);
    TPS_CHECK_AS(InputError, m.rms_norm_eps > 0 && m.rms_norm_eps < 1, "{}: rms_norm_eps {} is not in (0, 1)", origin,
                 m.rms_norm_eps);
    m.rope = read_rope(r);
    // Mistral (and Qwen2 when use_sliding_window is set) attend to a window of recent tokens
    if (m.architecture == "mistral" || m.architecture == "mixtral" ||
        (qwen2 && r.boolean_or("use_sliding_window", false))) {
        m.sliding_window = r.positive_or("sliding_window", 0);
    }
    validate_hyperparameters(m);  // before anything is sized by them
    LlamaVariant v;
    v.qkv_bias = qwen2 || (llama && r.boolean_or("attention_bias", false));
    v.o_bias = llama && r.boolean_or("attention_bias", false);
    v.mlp_bias = llama && r.boolean_or("mlp_bias", false);
    build_llama_tensors(m, v);
    if (const auto q = checkpoint_quantization(r)) {
        try {
            apply_weight_format(m, *q);
        } catch (const UsageError& e) {
            throw InputError(fmt::format("{}: the checkpoint's quantization does not fit its shapes: {}", origin,
                                         e.what()));
        }
        const std::string method = Reader{*r.find("quantization_config"), origin}.string_or("quant_method", "");
        m.notes.push_back(fmt::format("checkpoint is pre-quantized ({}): layer weights planned as {}", method,
                                      dtype_name(*q)));
        m.fixed_format = fmt::format("is a pre-quantized ({}) checkpoint whose layers are stored as {}", method,
                                     dtype_name(*q));
    }
    validate_model(m);
    return m;
}

ModelDesc model_from_hf_dir(const std::filesystem::path& dir) {
    const auto path = dir / "config.json";
    std::ifstream in(path);
    TPS_CHECK_AS(InputError, in.good(), "{}: cannot open (is {} an HF model directory?)",
                 path.string(), dir.string());
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& e) {
        throw InputError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
    }
    std::string name = dir.filename().string();
    if (name.empty()) name = dir.parent_path().filename().string();
    return model_from_hf_config(j, name, path.string());
}

}  // namespace tps
