// Everything a model directory or GGUF file provides, opened together: the description, the
// weights, the tokenizer, the chat template and the stop tokens. HF directories: config.json,
// *.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json. GGUF: its
// metadata. Errors name the file and what is missing.
#pragma once

#include "tpserve/engine/chat_template.h"
#include "tpserve/engine/sampler.h"
#include "tpserve/engine/tokenizer.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model.h"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tps {

// The sampling settings an HF model's generation_config.json gives that differ from transformers'
// defaults (temperature 1, top_p 1, top_k 50, repetition_penalty 1, no min_p): what the model's
// authors meant it to be sampled with, and what vLLM applies to requests that leave them out.
struct SamplingDefaults {
    std::optional<float> temperature, top_p, min_p, repetition_penalty;
    std::optional<int32_t> top_k;
    std::string origin;  // the file they came from

    bool empty() const noexcept { return !temperature && !top_p && !min_p && !repetition_penalty && !top_k; }
    // `base` with these set; UsageError naming `origin` when one is outside what a request may ask
    SamplingParams over(SamplingParams base) const;
    std::string describe() const;  // "temperature 0.6, top_p 0.9"
};

struct ModelFiles {
    std::filesystem::path path;
    ModelDesc desc;
    std::shared_ptr<const WeightSource> weights;
    std::unique_ptr<Tokenizer> tokenizer;
    std::optional<ChatTemplate> chat_template;  // none when the model has no template
    std::string chat_template_source;           // its text (empty when none)
    std::vector<int32_t> stop_ids;              // generation_config eos_token_id(s), else the tokenizer's EOS
    std::string bos_token;                      // as text, for the chat template
    std::string eos_token;
    SamplingDefaults sampling_defaults;         // generation_config.json's (none for GGUF)

    static ModelFiles open(const std::filesystem::path& path);

    // `--format`: the layers' linear weights quantized (or converted) to `format` as they are
    // loaded, and the description says so (the planner sizes that, a plan's fingerprint records
    // it). UsageError for a GGUF (its formats are the file's), a format the engine does not
    // compute with, or rows that do not split into the format's blocks.
    void store_layers_as(DType format);

    // The prompt as token ids: the chat template rendered for one user message (and an optional
    // system message) and encoded without extra special tokens (the template writes them), or
    // the plain text encoded with the tokenizer's special tokens.
    std::vector<int32_t> encode_prompt(const std::string& text, bool chat, const std::string& system = "") const;
};

}  // namespace tps
