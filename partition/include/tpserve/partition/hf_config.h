// Reads a Hugging Face model's config.json into a ModelDesc (no weights are opened). Supported
// model_type values: llama, mistral, qwen2, mixtral. A missing or mistyped field is a
// tps::InputError that names the file and the field.
#pragma once

#include "tpserve/partition/model.h"

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <string>

namespace tps {

// `origin` names the source in messages and in ModelDesc::source ("examples/models/x/config.json").
ModelDesc model_from_hf_config(const nlohmann::json& config, const std::string& name,
                               const std::string& origin);

// Reads DIR/config.json.
ModelDesc model_from_hf_dir(const std::filesystem::path& dir);

}  // namespace tps
