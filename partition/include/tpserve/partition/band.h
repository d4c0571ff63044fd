// A card's memory band: the plan must put every rank's predicted bytes inside [min, max]. The
// default is 62.5-75% of a GPU's capacity (20-24 GiB on a 32 GiB card), leaving the rest for
// communication buffers, fragmentation and spikes; a CPU rank has no floor (the host is shared)
// and a ceiling of 75% of its share of host memory.
#pragma once

#include "tpserve/partition/device.h"

#include <cstdint>
#include <string_view>
#include <vector>

namespace tps {

struct Band {
    int64_t min_bytes = 0;
    int64_t max_bytes = 0;
    bool contains(int64_t bytes) const noexcept { return bytes >= min_bytes && bytes <= max_bytes; }
};

inline constexpr double kDefaultBandMin = 20.0 / 32.0;
inline constexpr double kDefaultBandMax = 24.0 / 32.0;

Band default_band(const DeviceProfile& device);

// --budget: "20:24" (GiB, every card) or one band per card "20:24,20:24,15:18". An empty spec
// gives the defaults. Throws tps::UsageError naming --budget.
std::vector<Band> parse_budget(std::string_view spec, const std::vector<DeviceProfile>& devices);

}  // namespace tps
