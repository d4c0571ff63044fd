// GGUF metadata -> ModelDesc. Hyper-parameters come from the "<arch>.*" keys (llama.cpp's names);
// tensor roles from llama.cpp's tensor names (blk.N.attn_q.weight, ...); tensor types are whatever
// the file holds, layer by layer (Q4_K_M files mix q4_k and q6_k, for instance).
#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"
#include "tpserve/partition/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>
#include <set>

namespace tps {
namespace {

struct Role {
    TensorRole role;
    bool linear;
    bool expert = false;
};

// Role of a per-layer tensor from the part of its name after "blk.N.".
std::optional<Role> layer_role(const std::string& rest) {
    static const std::regex per_expert(R"(ffn_(gate|up|down)\.\d+\.weight)");
    if (rest == "attn_norm.weight" || rest == "ffn_norm.weight" || rest == "attn_q_norm.weight" ||
        rest == "attn_k_norm.weight" || rest == "ffn_gate_inp.weight" || rest == "attn_output.bias" ||
        rest == "ffn_down.bias" || rest == "ffn_down_exps.bias") {
        return Role{TensorRole::replicated, false};
    }
    if (rest == "ffn_gate_exps.weight" || rest == "ffn_up_exps.weight") return Role{TensorRole::column, true, true};
    if (rest == "attn_q.weight" || rest == "ffn_gate.weight" || rest == "ffn_up.weight") {
        return Role{TensorRole::column, true};
    }
    if (rest == "attn_q.bias" || rest == "ffn_gate.bias" || rest == "ffn_up.bias") {
        return Role{TensorRole::column, false};
    }
    if (rest == "attn_k.weight" || rest == "attn_v.weight") return Role{TensorRole::kv_column, true};
    if (rest == "attn_k.bias" || rest == "attn_v.bias") return Role{TensorRole::kv_column, false};
    if (rest == "ffn_down_exps.weight") return Role{TensorRole::row, true, true};
    if (rest == "attn_output.weight" || rest == "ffn_down.weight") return Role{TensorRole::row, true};
    std::smatch m;
    if (std::regex_match(rest, m, per_expert)) {
        return Role{m[1] == "down" ? TensorRole::row : TensorRole::column, true, true};
    }
    return std::nullopt;
}

TensorSpec spec_of(const GgufTensorInfo& info) {
    TensorSpec t;
    t.name = info.name;
    t.dtype = *dtype_from_ggml(info.ggml_type);  // validated by the reader
    if (info.ne.size() == 1) {
        t.out = info.ne[0];
        t.in = 1;
    } else {
        t.in = info.ne[0];
        t.out = info.ne[1];
        for (size_t d = 2; d < info.ne.size(); ++d) t.experts *= info.ne[d];
    }
    return t;
}

}  // namespace

ModelDesc model_from_gguf(const GgufFile& f) {
    ModelDesc m;
    m.source = f.path;
    m.from_gguf = true;
    m.fixed_format = "is a GGUF file whose tensor types are fixed by the file";
    const auto arch = f.string("general.architecture");
    TPS_CHECK_AS(InputError, arch.has_value(), "{}: missing general.architecture", f.path);
    TPS_CHECK_AS(InputError, *arch == "llama" || *arch == "qwen2",
                 "{}: general.architecture \"{}\" is not a supported Llama-family model (llama, qwen2)",
                 f.path, *arch);
    m.architecture = *arch;
    m.name = f.string("general.name").value_or(std::filesystem::path(f.path).stem().string());

    const std::string p = *arch + ".";
    auto required = [&](const std::string& key) {
        const auto v = f.integer(p + key);
        TPS_CHECK_AS(InputError, v.has_value(), "{}: missing metadata {}{}", f.path, p, key);
        TPS_CHECK_AS(InputError, *v > 0, "{}: metadata {}{} must be positive, got {}", f.path, p, key, *v);
        return *v;
    };
    m.layers = required("block_count");
    m.hidden = required("embedding_length");
    m.intermediate = required("feed_forward_length");
    m.heads = required("attention.head_count");
    m.max_context = required("context_length");
    m.kv_heads = f.integer(p + "attention.head_count_kv").value_or(m.heads);
    m.head_dim = f.integer(p + "attention.key_length").value_or(m.hidden / m.heads);
    m.experts = f.integer(p + "expert_count").value_or(0);
    m.experts_active = f.integer(p + "expert_used_count").value_or(0);
    if (*arch == "llama" && m.experts > 0) m.architecture = "mixtral";
    m.vocab = f.integer(p + "vocab_size").value_or(1);  // refined from token_embd below
    m.rms_norm_eps = f.real(p + "attention.layer_norm_rms_epsilon").value_or(1e-5);
    TPS_CHECK_AS(InputError, m.rms_norm_eps > 0 && m.rms_norm_eps < 1, "{}: {}attention.layer_norm_rms_epsilon {} is not in (0, 1)",
                 f.path, p, m.rms_norm_eps);
    m.rope.theta = f.real(p + "rope.freq_base").value_or(10000.0);
    TPS_CHECK_AS(InputError, m.rope.theta > 0, "{}: {}rope.freq_base must be positive", f.path, p);
    if (const auto type = f.string(p + "rope.scaling.type"); type && *type != "none") {
        m.rope.scaling = *type;
        m.rope.factor = f.real(p + "rope.scaling.factor").value_or(1.0);
    }
    // llama.cpp permutes llama-architecture Q/K rows for adjacent-pair RoPE; qwen2 keeps NeoX order
    m.rope.adjacent_pairs = *arch == "llama";
    validate_hyperparameters(m);  // before anything is sized by them

    // Every layer holds several tensors: a block count beyond the tensor table is corrupt, and is
    // refused before anything is sized by it.
    TPS_CHECK_AS(InputError, m.layers <= kMaxLayers && static_cast<size_t>(m.layers) <= f.tensors.size(),
                 "{}: {}block_count {} does not fit its {} tensors", f.path, p, m.layers, f.tensors.size());
    m.layer_tensors.assign(static_cast<size_t>(m.layers), {});
    const GgufTensorInfo* embedding = nullptr;
    std::set<std::string> names;
    bool has_output = false;
    static const std::regex block_name(R"(blk\.(\d+)\.(.+))");
    for (const auto& info : f.tensors) {
        TensorSpec t = spec_of(info);
        TPS_CHECK_AS(InputError, names.insert(info.name).second, "{}: tensor {} appears twice", f.path, info.name);
        std::smatch sm;
        if (std::regex_match(info.name, sm, block_name)) {
            const std::string index = sm[1].str();
            const auto layer = index.size() <= 6 ? parse_int(index) : std::nullopt;
            TPS_CHECK_AS(InputError, layer && *layer < m.layers, "{}: tensor {} names layer {} but the model has {}",
                         f.path, info.name, index, m.layers);
            if (const auto role = layer_role(sm[2].str())) {
                t.role = role->role;
                t.linear = role->linear;
                t.expert = role->expert;
            } else {
                t.role = TensorRole::replicated;
                m.notes.push_back(fmt::format("tensor {} has no known tensor-parallel role; counted whole on "
                                              "every rank of its stage", info.name));
            }
            m.layer_tensors[static_cast<size_t>(*layer)].push_back(t);
            continue;
        }
        t.role = TensorRole::replicated;
        if (info.name == "token_embd.weight") {
            t.role = TensorRole::vocab;
            t.placement = Placement::first_stage;
            embedding = &info;
        } else if (info.name == "output.weight") {
            t.role = TensorRole::vocab;
            t.placement = Placement::last_stage;
            has_output = true;
        } else if (info.name == "output_norm.weight") {
            t.placement = Placement::last_stage;
        } else if (info.name == "rope_freqs.weight") {
            m.rope.freq_factors_tensor = true;
            m.rope.scaling = "llama3";
        } else {
            m.notes.push_back(fmt::format("tensor {} is not a known Llama tensor; counted on every rank",
                                          info.name));
        }
        m.globals.push_back(t);
    }
    TPS_CHECK_AS(InputError, embedding != nullptr, "{}: no token_embd.weight tensor", f.path);
    m.tied_embeddings = !has_output;
    const TensorSpec embed = spec_of(*embedding);
    m.vocab = f.integer(p + "vocab_size").value_or(embed.out);
    m.checkpoint_dtype = (embed.dtype == DType::f32 || embed.dtype == DType::bf16) ? embed.dtype : DType::f16;

    // The shapes must agree with the hyper-parameters, or the shards computed from them would not.
    TPS_CHECK_AS(InputError, embed.in == m.hidden && embed.out == m.vocab,
                 "{}: token_embd.weight is {} x {} but the metadata says vocabulary {} x hidden {}", f.path,
                 embed.out, embed.in, m.vocab, m.hidden);
    for (size_t l = 0; l < m.layer_tensors.size(); ++l) {
        const auto& L = m.layer_tensors[l];
        TPS_CHECK_AS(InputError, !L.empty(), "{}: layer {} has no tensors", f.path, l);
        // a layer missing a projection would be undercounted: each one must be there
        auto has = [&](const std::string& rest) {
            const std::string full = fmt::format("blk.{}.{}", l, rest);
            return std::any_of(L.begin(), L.end(), [&](const TensorSpec& t) { return t.name == full; });
        };
        for (const char* name : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}) {
            TPS_CHECK_AS(InputError, has(name), "{}: layer {} has no {}", f.path, l, name);
        }
        const bool dense_ffn = has("ffn_gate.weight") && has("ffn_up.weight") && has("ffn_down.weight");
        const bool merged_experts = has("ffn_gate_exps.weight") && has("ffn_up_exps.weight") && has("ffn_down_exps.weight");
        const bool split_experts = m.experts > 0 && has("ffn_gate.0.weight") && has("ffn_down.0.weight");
        TPS_CHECK_AS(InputError, dense_ffn || merged_experts || split_experts,
                     "{}: layer {} has no complete feed-forward block (ffn_gate/up/down or their _exps)", f.path, l);
        for (const auto& t : L) {
            const std::string rest = t.name.substr(t.name.find('.', 4) + 1);
            int64_t want_out = -1;
            int64_t want_in = -1;
            if (rest == "attn_q.weight") { want_out = m.heads * m.head_dim; want_in = m.hidden; }
            if (rest == "attn_k.weight" || rest == "attn_v.weight") { want_out = m.kv_heads * m.head_dim; want_in = m.hidden; }
            if (rest == "attn_output.weight") { want_out = m.hidden; want_in = m.heads * m.head_dim; }
            if (rest == "ffn_gate.weight" || rest == "ffn_up.weight" || rest == "ffn_gate_exps.weight" ||
                rest == "ffn_up_exps.weight") { want_out = m.intermediate; want_in = m.hidden; }
            if (rest == "ffn_down.weight" || rest == "ffn_down_exps.weight") { want_out = m.hidden; want_in = m.intermediate; }
            TPS_CHECK_AS(InputError, want_out < 0 || (t.out == want_out && t.in == want_in),
                         "{}: tensor {} is {} x {} but the metadata implies {} x {}", f.path, t.name, t.out,
                         t.in, want_out, want_in);
            TPS_CHECK_AS(InputError, t.experts == 1 || t.experts == m.experts,
                         "{}: tensor {} holds {} experts but the metadata says {}", f.path, t.name,
                         t.experts, m.experts);
        }
    }
    validate_model(m);
    return m;
}

}  // namespace tps
