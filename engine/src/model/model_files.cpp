#include "tpserve/engine/model_files.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/gguf.h"
#include "tpserve/partition/hf_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

namespace tps {
namespace {

namespace fs = std::filesystem;

std::optional<nlohmann::json> read_json(const fs::path& p) {
    std::ifstream in(p);
    if (!in.good()) return std::nullopt;
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw InputError(fmt::format("{}: not valid JSON: {}", p.string(), e.what()));
    }
}

// "eos_token_id": 2 or [128001, 128008, 128009]
void add_ids(const nlohmann::json& v, std::vector<int32_t>& out) {
    if (v.is_number_integer()) out.push_back(v.get<int32_t>());
    if (v.is_array()) {
        for (const auto& x : v) {
            if (x.is_number_integer()) out.push_back(x.get<int32_t>());
        }
    }
}

// tokenizer_config.json: "chat_template" is a string, or a list of {"name", "template"} (the
// "default" one is used); tokens may be strings or {"content": ...} objects
std::optional<std::string> hf_chat_template(const nlohmann::json& cfg, const std::string& origin) {
    if (!cfg.contains("chat_template") || cfg["chat_template"].is_null()) return std::nullopt;
    const auto& t = cfg["chat_template"];
    if (t.is_string()) return t.get<std::string>();
    TPS_CHECK_AS(InputError, t.is_array(), "{}: chat_template must be a string or a list of named templates", origin);
    for (const auto& e : t) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string()) {
            return e["template"].get<std::string>();
        }
    }
    return std::nullopt;
}

std::string token_text(const nlohmann::json& cfg, const char* key) {
    if (!cfg.contains(key)) return {};
    const auto& v = cfg[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    return {};
}

// A number field of generation_config.json, unless absent, null or transformers' default.
std::optional<double> setting(const nlohmann::json& gen, const char* name, std::optional<double> hf_default,
                              const std::string& origin) {
    if (!gen.contains(name) || gen[name].is_null()) return std::nullopt;
    TPS_CHECK_AS(InputError, gen[name].is_number(), "{}: '{}' must be a number, got {}", origin, name, gen[name].dump());
    const double v = gen[name].get<double>();
    if (hf_default && v == *hf_default) return std::nullopt;
    return v;
}

SamplingDefaults read_sampling_defaults(const nlohmann::json& gen, const std::string& origin) {
    SamplingDefaults d;
    d.origin = origin;
    if (!gen.is_object()) return d;
    auto as_float = [](std::optional<double> v) { return v ? std::optional<float>(static_cast<float>(*v)) : std::nullopt; };
    d.temperature = as_float(setting(gen, "temperature", 1.0, origin));
    d.top_p = as_float(setting(gen, "top_p", 1.0, origin));
    d.min_p = as_float(setting(gen, "min_p", std::nullopt, origin));
    d.repetition_penalty = as_float(setting(gen, "repetition_penalty", 1.0, origin));
    if (const auto k = setting(gen, "top_k", 50.0, origin)) {
        TPS_CHECK_AS(InputError, *k == std::floor(*k) && *k >= 0 && *k <= (1 << 24), "{}: 'top_k' must be a count, got {}",
                     origin, *k);
        d.top_k = static_cast<int32_t>(*k);
    }
    return d;
}

}  // namespace

SamplingParams SamplingDefaults::over(SamplingParams p) const {
    if (temperature) p.temperature = *temperature;
    if (top_p) p.top_p = *top_p;
    if (min_p) p.min_p = *min_p;
    if (repetition_penalty) p.repetition_penalty = *repetition_penalty;
    if (top_k) p.top_k = *top_k;
    try {
        Sampler::validate(p);
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("{}: {} (--generation-config none ignores the file's sampling settings)", origin,
                                     e.what()));
    }
    return p;
}

std::string SamplingDefaults::describe() const {
    std::string out;
    auto add = [&](const char* name, const auto& v) {
        if (v) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", name, *v);
    };
    add("temperature", temperature);
    add("top_k", top_k);
    add("top_p", top_p);
    add("min_p", min_p);
    add("repetition_penalty", repetition_penalty);
    return out;
}

ModelFiles ModelFiles::open(const fs::path& path) {
    ModelFiles f;
    f.path = path;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        f.desc = model_from_hf_dir(path);
        f.weights = WeightSource::open(path);
        f.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_hf_dir(path));
        if (const auto cfg = read_json(path / "tokenizer_config.json")) {
            if (auto t = hf_chat_template(*cfg, (path / "tokenizer_config.json").string())) {
                f.chat_template.emplace(*t, (path / "tokenizer_config.json").string());
                f.chat_template_source = *t;
            }
            f.bos_token = token_text(*cfg, "bos_token");
            f.eos_token = token_text(*cfg, "eos_token");
        }
        if (const auto gen = read_json(path / "generation_config.json")) {
            if (gen->contains("eos_token_id")) add_ids((*gen)["eos_token_id"], f.stop_ids);
            f.sampling_defaults = read_sampling_defaults(*gen, (path / "generation_config.json").string());
        }
        if (f.stop_ids.empty()) {
            if (const auto cfg = read_json(path / "config.json"); cfg && cfg->contains("eos_token_id")) {
                add_ids((*cfg)["eos_token_id"], f.stop_ids);
            }
        }
    } else {
        TPS_CHECK_AS(InputError, fs::is_regular_file(path, ec) && looks_like_gguf(path),
                     "{}: not an HF model directory or a GGUF file", path.string());
        const GgufFile meta = read_gguf_metadata(path);
        f.desc = model_from_gguf(meta);
        f.weights = WeightSource::open(path);
        f.tokenizer = std::make_unique<Tokenizer>(Tokenizer::from_gguf(meta));
        if (const auto t = meta.string("tokenizer.chat_template")) {
            f.chat_template.emplace(*t, path.string());
            f.chat_template_source = *t;
        }
        if (const auto eos = meta.integer("tokenizer.ggml.eos_token_id")) f.stop_ids.push_back(static_cast<int32_t>(*eos));
        if (const auto eot = meta.integer("tokenizer.ggml.eot_token_id")) f.stop_ids.push_back(static_cast<int32_t>(*eot));
    }
    if (f.stop_ids.empty() && f.tokenizer->eos_id()) f.stop_ids.push_back(*f.tokenizer->eos_id());
    if (f.bos_token.empty() && f.tokenizer->bos_id()) f.bos_token = std::string(f.tokenizer->token_text(*f.tokenizer->bos_id()));
    if (f.eos_token.empty() && f.tokenizer->eos_id()) f.eos_token = std::string(f.tokenizer->token_text(*f.tokenizer->eos_id()));
    return f;
}

void ModelFiles::store_layers_as(DType format) {
    TPS_CHECK_AS(UsageError, engine_stores(format),
                 "--format {}: the planner can plan for it, but the engine does not quantize to it ({}{})",
                 dtype_name(format), engine_store_names(),
                 engine_supports(format) ? "; it reads it from GGUF files" : "");
    apply_weight_format(desc, format);
    weights = WeightSource::converted(std::move(weights), desc);
}

std::vector<int32_t> ModelFiles::encode_prompt(const std::string& text, bool chat, const std::string& system) const {
    if (!chat) return tokenizer->encode(text, true);
    TPS_CHECK_AS(UsageError, chat_template.has_value(), "--chat: {} has no chat template", path.string());
    nlohmann::json messages = nlohmann::json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
    messages.push_back({{"role", "user"}, {"content", text}});
    const nlohmann::json context = {{"messages", messages},
                                    {"add_generation_prompt", true},
                                    {"bos_token", bos_token},
                                    {"eos_token", eos_token}};
    // as transformers' apply_chat_template(tokenize=True): the template writes the special tokens
    return tokenizer->encode(chat_template->render(context), false);
}

}  // namespace tps
