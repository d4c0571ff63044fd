// Everything a model directory or GGUF file provides, opened together: the description, the
// weights, the tokenizer, the chat template and the stop tokens. HF directories: config.json,
// *.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json. GGUF: its
// metadata. Errors name the file and what is missing.
#pragma once

#include "tpserve/engine/chat_template.h"
#include "tpserve/engine/tokenizer.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model.h"

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tps {

struct ModelFiles {
    std::filesystem::path path;
    ModelDesc desc;
    std::shared_ptr<const WeightSource> weights;
    std::unique_ptr<Tokenizer> tokenizer;
    std::optional<ChatTemplate> chat_template;  // none when the model has no template
    std::vector<int32_t> stop_ids;              // generation_config eos_token_id(s), else the tokenizer's EOS
    std::string bos_token;                      // as text, for the chat template
    std::string eos_token;

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
