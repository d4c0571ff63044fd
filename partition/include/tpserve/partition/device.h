// The cards a plan runs on. A catalog of GPU profiles with sourced numbers (docs/planner.md,
// "GPU catalog"), custom profiles from the command line, and `cpu` devices for machines without
// GPUs (memory from /proc/meminfo, bandwidth and compute measured, or given).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

enum class DeviceKind : uint8_t { gpu, cpu };

// How a card reaches its peers: the link family sets the default all-reduce and send costs.
enum class LinkKind : uint8_t { pcie3, pcie4, pcie5, nvlink, host_memory };

std::string_view link_kind_name(LinkKind k) noexcept;

struct DeviceProfile {
    std::string name;  // catalog key ("rtx5090") or the custom name
    DeviceKind kind = DeviceKind::gpu;
    int64_t memory_bytes = 0;   // capacity the band is a fraction of
    double bandwidth = 0;       // memory bandwidth, bytes/s (data-sheet or measured)
    double flops = 0;           // dense bf16 tensor FLOP/s (FP32 accumulate) or measured f32 FLOP/s
    int sm = 0;                 // compute capability x10 (120 = sm_120); 0 unknown
    LinkKind link = LinkKind::pcie4;
    bool p2p = false;           // GPU peer-to-peer works on the stock driver
    bool measured = false;      // bandwidth / flops measured on this machine, not from a data sheet
    std::string source;         // where the numbers come from (docs/planner.md has the full citation)

    bool same_card(const DeviceProfile& o) const noexcept;
};

// The built-in GPU profiles, in the order docs/planner.md lists them.
const std::vector<DeviceProfile>& gpu_catalog();

// Parses --gpus: a comma-separated list whose items are a catalog name, `cpu`,
// `name:mem_gb:bw_gbs:tflops` (a custom GPU; `cpu:...` for a CPU with given numbers), each
// optionally prefixed by a count `Nx` ("4xrtx5090", "rtx5090,rtx5090,rtx4090", "2xcpu").
// mem_gb is GiB (what nvidia-smi reports), bw_gbs is 10^9 bytes/s, tflops 10^12 FLOP/s.
// Throws tps::UsageError naming --gpus and the bad item.
std::vector<DeviceProfile> parse_device_list(std::string_view spec);

}  // namespace tps

namespace tps {

// The catalog profile for a CUDA device name ("NVIDIA GeForce RTX 5090" -> rtx5090,
// "NVIDIA H100 80GB HBM3" -> h100-sxm, "NVIDIA H100 PCIe" -> h100-pcie), or nullopt.
std::optional<DeviceProfile> catalog_match(std::string_view cuda_name);

}  // namespace tps
