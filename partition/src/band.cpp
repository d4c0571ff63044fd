#include "tpserve/partition/band.h"

#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"

#include <fmt/format.h>

#include <cmath>

namespace tps {
namespace {

Band parse_one(const std::string& item, const DeviceProfile& d, size_t index) {
    const auto parts = split(item, ':');
    TPS_CHECK_AS(UsageError, parts.size() == 2, "--budget: '{}' is not min_gb:max_gb (e.g. 20:24)", item);
    const auto lo = parse_double(parts[0]);
    const auto hi = parse_double(parts[1]);
    TPS_CHECK_AS(UsageError, lo && *lo >= 0, "--budget: '{}': the minimum '{}' must be a number >= 0", item,
                 parts[0]);
    TPS_CHECK_AS(UsageError, hi && *hi > 0, "--budget: '{}': the maximum '{}' must be a positive number", item,
                 parts[1]);
    TPS_CHECK_AS(UsageError, *lo <= *hi, "--budget: '{}': the minimum {} GiB is above the maximum {} GiB", item,
                 *lo, *hi);
    // compared in GiB before converting, so an absurd value cannot overflow into a small one
    const double capacity = static_cast<double>(d.memory_bytes) / static_cast<double>(kGiB);
    TPS_CHECK_AS(UsageError, *hi <= capacity * (1 + 1e-12),
                 "--budget: '{}': the maximum {} GiB exceeds card {} ({}) capacity of {} GiB", item, *hi, index,
                 d.name, gib(d.memory_bytes));
    Band b{static_cast<int64_t>(std::llround(*lo * static_cast<double>(kGiB))),
           std::min(d.memory_bytes, static_cast<int64_t>(std::llround(*hi * static_cast<double>(kGiB))))};
    return b;
}

}  // namespace

Band default_band(const DeviceProfile& d) {
    const double cap = static_cast<double>(d.memory_bytes);
    const auto max = static_cast<int64_t>(std::llround(cap * kDefaultBandMax));
    if (d.kind == DeviceKind::cpu) return Band{0, max};
    return Band{static_cast<int64_t>(std::llround(cap * kDefaultBandMin)), max};
}

std::vector<Band> parse_budget(std::string_view spec, const std::vector<DeviceProfile>& devices) {
    std::vector<Band> bands;
    if (trim(spec).empty()) {
        for (const auto& d : devices) bands.push_back(default_band(d));
        return bands;
    }
    const auto items = split(spec, ',');
    TPS_CHECK_AS(UsageError, items.size() == 1 || items.size() == devices.size(),
                 "--budget: {} bands given for {} cards (give one band for all, or one per card)", items.size(),
                 devices.size());
    for (size_t i = 0; i < devices.size(); ++i) {
        bands.push_back(parse_one(items.size() == 1 ? items[0] : items[i], devices[i], i));
    }
    return bands;
}

}  // namespace tps
