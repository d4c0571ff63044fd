// The cost of moving activations between ranks. An all-reduce over n ranks of M bytes costs
// alpha + 2(n-1)/n * M / beta (beta is NCCL's "bus bandwidth", so figures from nccl-tests carry
// over); a stage hand-over (send/recv) costs send_alpha + M / send_beta. Defaults per link family
// are cited in docs/planner.md ("Link defaults"); `tpserve check` measures a box and writes a
// link profile file that replaces them.
#pragma once

#include "tpserve/partition/device.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace tps {

struct LinkProfile {
    LinkKind kind = LinkKind::pcie5;
    bool p2p = false;
    double allreduce_alpha = 0;  // seconds
    double allreduce_beta = 0;   // bytes/s (bus bandwidth)
    double send_alpha = 0;       // seconds
    double send_beta = 0;        // bytes/s
    std::string source;

    double allreduce_seconds(int ranks, double bytes) const noexcept;
    double send_seconds(double bytes) const noexcept;
    std::string describe() const;  // "PCIe 5.0, no P2P (through host memory)"
};

LinkProfile default_link(LinkKind kind, bool p2p);

// The link a device list implies: the slowest family among the cards, P2P only if all have it;
// `kind` / `p2p` override (--link, --p2p).
LinkProfile link_for_devices(const std::vector<DeviceProfile>& devices, std::optional<LinkKind> kind,
                             std::optional<bool> p2p);

// --link values: pcie3, pcie4, pcie5, nvlink (host-memory is implied by cpu devices).
std::optional<LinkKind> parse_link_kind(std::string_view name);

// A link profile as `tpserve check` writes it (schema in docs/planner.md, "Link profile").
LinkProfile read_link_profile(const std::filesystem::path& path);
std::string link_profile_json(const LinkProfile& link);

}  // namespace tps
