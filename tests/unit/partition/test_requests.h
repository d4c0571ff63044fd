// Builds planner requests from the same strings a user types, so tests read like the CLI.
#pragma once

#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/planner.h"

#include <filesystem>
#include <optional>
#include <string>

#include <unistd.h>

namespace tps::test {

inline PlanRequest request(const std::string& model, const std::string& gpus, std::optional<DType> format = {},
                           const std::string& budget = "") {
    PlanRequest r;
    r.model = load_model(model);
    if (format) apply_weight_format(r.model, *format);
    r.devices = parse_device_list(gpus);
    r.bands = parse_budget(budget, r.devices);
    r.link = link_for_devices(r.devices, std::nullopt, std::nullopt);
    return r;
}

inline std::string fixture(const std::string& rel) { return std::string(TPS_SOURCE_DIR) + "/tests/fixtures/" + rel; }

// A scratch path of this process (ctest runs tests in parallel processes, CI may run two builds).
inline std::filesystem::path temp_path(const std::string& name) {
    return std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "-" + name);
}

}  // namespace tps::test
