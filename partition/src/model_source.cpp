#include "tpserve/partition/model_source.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/gguf.h"
#include "tpserve/partition/hf_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

namespace tps {

namespace detail {
// Generated at configure time from examples/models/*/config.json (partition/CMakeLists.txt).
extern const Preset kPresetTable[];
extern const size_t kPresetCount;
}  // namespace detail

const std::vector<Preset>& presets() {
    static const std::vector<Preset> sorted = [] {
        std::vector<Preset> v(detail::kPresetTable, detail::kPresetTable + detail::kPresetCount);
        std::sort(v.begin(), v.end(), [](const Preset& a, const Preset& b) { return a.name < b.name; });
        return v;
    }();
    return sorted;
}

ModelDesc load_model(const std::string& spec) {
    namespace fs = std::filesystem;
    TPS_CHECK_AS(UsageError, !spec.empty(), "--model: no model given (a preset name, an HF model "
                                            "directory or a .gguf file)");
    for (const Preset& p : presets()) {
        if (p.name == spec) {
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(p.config_json);
            } catch (const nlohmann::json::exception& e) {
                throw InputError(fmt::format("preset {}: config.json is not valid JSON: {}", spec, e.what()));
            }
            return model_from_hf_config(j, spec, "preset:" + spec);
        }
    }
    std::error_code ec;
    const fs::path path(spec);
    if (fs::is_directory(path, ec)) return model_from_hf_dir(path);
    if (fs::is_regular_file(path, ec)) {
        if (looks_like_gguf(path)) return model_from_gguf(read_gguf_metadata(path));
        if (path.filename() == "config.json") return model_from_hf_dir(path.parent_path().empty() ? "." : path.parent_path());
        TPS_CHECK_AS(InputError, path.extension() != ".gguf",
                     "{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", spec);
        throw InputError(fmt::format("{}: neither a GGUF file nor a config.json", spec));
    }
    if (fs::exists(path, ec)) {
        throw InputError(fmt::format("{}: cannot read it (not a regular file or directory)", spec));
    }
    std::string names;
    for (const Preset& p : presets()) names += (names.empty() ? "" : ", ") + std::string(p.name);
    throw UsageError(fmt::format("--model: '{}' is not a preset ({}), a model directory or a GGUF file",
                                 spec, names));
}

}  // namespace tps
