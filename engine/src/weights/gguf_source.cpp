// GGUF tensors for the engine: the metadata reader of partition/ gives names, types, shapes and
// offsets; the file is mapped and tensors are served under their HF names. GGML stores
// ne = [in, out]; it is presented as torch's [out, in]. A Mixtral's merged expert tensors
// (ne = [in, out, experts], one expert's matrix after another) are split into each expert's
// matrix as older files store them (ffn_gate.<e>.weight), so both layouts are served alike, under
// the names of the published checkpoints (block_sparse_moe.experts.<e>.w1 ...).
#include "tensor_file.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/gguf.h"

#include <regex>

namespace tps::detail {
namespace {

// HF name -> llama.cpp name.
std::string gguf_name(std::string_view hf) {
    static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
    static const std::pair<const char*, const char*> kLayer[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
        {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
    };
    const std::string s(hf);
    if (s == "model.embed_tokens.weight") return "token_embd.weight";
    if (s == "model.norm.weight") return "output_norm.weight";
    if (s == "lm_head.weight") return "output.weight";
    std::smatch m;
    if (std::regex_match(s, m, layer)) {
        for (const auto& [from, to] : kLayer) {
            if (m[2] == from) return "blk." + m[1].str() + "." + to;
        }
        // an expert: one tensor per expert (merged files are split so at open)
        static const std::regex expert(R"(block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight)");
        std::smatch e;
        const std::string rest = m[2].str();
        if (std::regex_match(rest, e, expert)) {
            const std::string kind = e[2] == "w1" ? "gate" : e[2] == "w3" ? "up" : "down";
            return "blk." + m[1].str() + ".ffn_" + kind + "." + e[1].str() + ".weight";
        }
    }
    return s;  // e.g. rope_freqs.weight
}

class GgufSource final : public TableSource {
public:
    explicit GgufSource(const std::filesystem::path& path) {
        origin_ = path.string();
        const GgufFile meta = read_gguf_metadata(path);
        files_.push_back(std::make_unique<MappedFile>(path));
        const MappedFile& f = *files_.back();
        TPS_CHECK_AS(InputError, f.size() == meta.file_size, "{}: changed while being read", origin_);
        for (const auto& t : meta.tensors) {
            TensorEntry e;
            e.type = *dtype_from_ggml(t.ggml_type);  // checked by the metadata reader
            e.shape.assign(t.ne.rbegin(), t.ne.rend());
            e.file = &f;
            e.offset = meta.data_offset + t.offset;  // bounds checked by the metadata reader
            e.bytes = t.bytes;
            if (const size_t merged = t.name.find("_exps.weight"); e.shape.size() == 3 && merged != std::string::npos) {
                // merged experts: each expert's [out, in] matrix, one after another, served as the
                // tensor of its own that older files have ("blk.0.ffn_gate_exps.weight" -> "blk.0.ffn_gate.<e>.weight")
                const int64_t experts = e.shape[0];
                TPS_CHECK_AS(InputError, experts > 0 && e.bytes % experts == 0, "{}: tensor {} does not split into {} experts",
                             origin_, t.name, experts);
                TensorEntry one = e;
                one.shape = {e.shape[1], e.shape[2]};
                one.bytes = e.bytes / experts;
                for (int64_t x = 0; x < experts; ++x) {
                    one.offset = e.offset + static_cast<uint64_t>(x * one.bytes);
                    tensors_.emplace(t.name.substr(0, merged) + "." + std::to_string(x) + ".weight", one);
                }
                continue;
            }
            if (e.shape.size() > 2) {
                throw InputError(fmt::format("{}: tensor {} has {} dimensions; the engine reads matrices and vectors",
                                             origin_, t.name, e.shape.size()));
            }
            tensors_.emplace(t.name, e);
        }
    }

protected:
    std::string stored_name(std::string_view hf_name) const override { return gguf_name(hf_name); }
};

}  // namespace

std::unique_ptr<WeightSource> open_gguf_weights(const std::filesystem::path& path) {
    return std::make_unique<GgufSource>(path);
}

}  // namespace tps::detail

namespace tps {

std::shared_ptr<const WeightSource> WeightSource::open(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) return detail::open_safetensors(path);
    TPS_CHECK_AS(InputError, fs::is_regular_file(path, ec), "{}: no such model directory or file", path.string());
    TPS_CHECK_AS(InputError, looks_like_gguf(path), "{}: not a GGUF file or an HF model directory", path.string());
    return detail::open_gguf_weights(path);
}

}  // namespace tps
