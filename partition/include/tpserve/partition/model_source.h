// Where a model description comes from: `--model` names a preset (the real config.json files in
// examples/models/, compiled into the binary), an HF model directory, a config.json file, or a
// GGUF file (metadata only).
#pragma once

#include "tpserve/partition/model.h"

#include <string>
#include <string_view>
#include <vector>

namespace tps {

struct Preset {
    std::string_view name;
    std::string_view config_json;
};

// The presets compiled in from examples/models/*/config.json, sorted by name.
const std::vector<Preset>& presets();

// Resolves `spec` (see above). An unknown name is a tps::UsageError for --model listing the
// presets; a broken file is a tps::InputError naming it.
ModelDesc load_model(const std::string& spec);

}  // namespace tps
