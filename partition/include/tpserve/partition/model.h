// The model as the planner sees it: hyper-parameters plus the list of weight tensors, each with its
// shape, storage format and tensor-parallel role. Built from an HF config.json, from a GGUF file's
// metadata, or from a preset; after that nothing downstream cares where it came from.
//
// Shapes follow torch.nn.Linear: a weight is (out, in); a vector (norm, bias) is (n, 1). The role
// says how tensor parallelism cuts it (the Megatron table in docs/planner.md).
#pragma once

#include "tpserve/partition/dtype.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tps {

enum class TensorRole : uint8_t {
    column,      // split along `out` by tp: q, gate, up (weights and biases)
    kv_column,   // k, v: split by KV heads, or one head per rank when KV heads < tp (replicated)
    row,         // split along `in` by tp, then all-reduce: o, down
    vocab,       // split along `out` (vocabulary) in uneven ceil(V/tp) slices: embedding, LM head
    replicated,  // whole on every rank that needs it: norms, MoE router, rope frequencies
};

// Where a tensor that belongs to no layer lives in a pipeline.
enum class Placement : uint8_t {
    first_stage,  // token embedding
    last_stage,   // final norm, LM head
    every_rank,   // e.g. llama3 rope frequencies read by every layer
};

struct TensorSpec {
    std::string name;
    TensorRole role = TensorRole::replicated;
    int64_t out = 0;      // rows (output features), or the length of a vector
    int64_t in = 1;       // columns (input features); 1 for a vector
    int64_t experts = 1;  // > 1: one such matrix per MoE expert (a merged expert tensor)
    bool expert = false;  // an MoE expert's weights (merged, or one expert's own tensor)
    DType dtype = DType::bf16;
    bool linear = false;  // a projection weight that --format may quantize
    Placement placement = Placement::every_rank;  // globals only
};

// The checkpoint names of a spec: its name, or one per expert for merged expert tensors named
// with a "*" in place of the expert's number (Mixtral's "...experts.*.w1.weight").
std::vector<std::string> checkpoint_names(const TensorSpec& t);

// Rotary position embedding as the checkpoint configures it. The planner ignores it; the engine
// computes with it and refuses scaling types it does not implement.
struct RopeConfig {
    double theta = 10000.0;
    std::string scaling = "none";  // none, linear, llama3; other names are kept for the message
    double factor = 1.0;           // linear and llama3
    double low_freq_factor = 1.0;  // llama3
    double high_freq_factor = 4.0;
    int64_t original_max_position = 8192;
    // GGUF llama3 files carry the per-frequency factors as a tensor (rope_freqs.weight) instead
    bool freq_factors_tensor = false;
    // HF stores Q/K so RoPE rotates the two halves of each head (NeoX style); llama.cpp permutes
    // llama-architecture Q/K rows so RoPE rotates adjacent pairs instead
    bool adjacent_pairs = false;
};

struct ModelDesc {
    std::string name;          // preset name, directory name or GGUF general.name
    std::string source;        // where it was read from (path or "preset:...")
    std::string architecture;  // llama, mistral, qwen2, mixtral
    int64_t hidden = 0;
    int64_t intermediate = 0;  // FFN width (per expert for MoE)
    int64_t layers = 0;
    int64_t heads = 0;
    int64_t kv_heads = 0;
    int64_t head_dim = 0;
    int64_t vocab = 0;
    int64_t max_context = 0;  // max_position_embeddings / context_length
    int64_t experts = 0;      // 0 for a dense model
    int64_t experts_active = 0;
    bool tied_embeddings = false;
    DType checkpoint_dtype = DType::bf16;  // what the embedding, norms and biases are stored in
    double rms_norm_eps = 1e-6;
    RopeConfig rope;
    int64_t sliding_window = 0;  // Mistral-style attention window (0: full attention)
    bool from_gguf = false;
    // Non-empty when the storage formats are fixed by the files (a GGUF, an AWQ/GPTQ/FP8
    // checkpoint): why --format cannot change them.
    std::string fixed_format;

    std::vector<TensorSpec> globals;              // embedding, final norm, LM head, ...
    std::vector<std::vector<TensorSpec>> layer_tensors;  // per layer, in order
    std::vector<std::string> notes;                // assumptions made while reading the model
};

// The tensors of a Llama-family checkpoint (Llama 2/3, Mistral, Qwen2, Mixtral) built from its
// hyper-parameters, in the checkpoint dtype. Flags for the architecture variations:
struct LlamaVariant {
    bool qkv_bias = false;     // Qwen2
    bool o_bias = false;       // Llama attention_bias (with qkv_bias)
    bool mlp_bias = false;     // Llama mlp_bias
};
void build_llama_tensors(ModelDesc& model, const LlamaVariant& variant);

// Calls fn on every tensor spec: the globals, then each layer's in order.
template <class Fn>
void for_each_tensor(const ModelDesc& model, Fn&& fn) {
    for (const auto& t : model.globals) fn(t);
    for (const auto& layer : model.layer_tensors) {
        for (const auto& t : layer) fn(t);
    }
}

// Checks hyper-parameters against each other and the tensor list against them; throws
// tps::InputError naming the model and the inconsistent field. Sizes beyond any real model
// (kMaxDimension elements, kMaxLayers layers) are refused so byte counts cannot overflow.
void validate_model(const ModelDesc& model);
// The hyper-parameter half of validate_model(): run before a tensor table is built from them.
void validate_hyperparameters(const ModelDesc& model);
inline constexpr int64_t kMaxDimension = int64_t{1} << 24;  // hidden, FFN, vocabulary, heads x head_dim
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxExperts = 4096;
inline constexpr int64_t kMaxContext = int64_t{1} << 26;
inline constexpr int64_t kMinContext = 16;  // one KV block

// Stores every linear projection weight in `format` (embedding, LM head, norms, biases and the MoE
// router keep their own format). Throws tps::UsageError when the model is a GGUF (its types are
// fixed by the file) or a row does not split into the format's blocks.
void apply_weight_format(ModelDesc& model, DType format);

// Total bytes of every weight tensor, each stored once.
int64_t total_weight_bytes(const ModelDesc& model);
// Parameter count (elements) of every weight tensor.
int64_t total_parameters(const ModelDesc& model);
// The format most of the layer weights are in, for display ("int8", "q4_1 + q8_0").
std::string weight_format_summary(const ModelDesc& model);

// Stable hash of the hyper-parameters and tensor table (hex): a plan records it so a plan made for
// one model is refused by another.
std::string model_fingerprint(const ModelDesc& model);

}  // namespace tps
