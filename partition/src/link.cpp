// Link defaults and link profile files. The numbers and their sources are in docs/planner.md
// ("Link defaults"); each row here names its source in `source`.
#include "tpserve/partition/link.h"

#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

namespace tps {
namespace {

int link_rank(LinkKind k) {
    // slower families first: a mixed box is as slow as its slowest link
    switch (k) {
        case LinkKind::host_memory: return 0;
        case LinkKind::pcie3: return 1;
        case LinkKind::pcie4: return 2;
        case LinkKind::pcie5: return 3;
        case LinkKind::nvlink: return 4;
    }
    return 0;
}

LinkProfile make(LinkKind kind, bool p2p, double ar_alpha_us, double ar_beta_gbs, double s_alpha_us,
                 double s_beta_gbs, std::string source) {
    LinkProfile l;
    l.kind = kind;
    l.p2p = p2p;
    l.allreduce_alpha = ar_alpha_us * 1e-6;
    l.allreduce_beta = ar_beta_gbs * 1e9;
    l.send_alpha = s_alpha_us * 1e-6;
    l.send_beta = s_beta_gbs * 1e9;
    l.source = std::move(source);
    return l;
}

}  // namespace

double LinkProfile::allreduce_seconds(int ranks, double bytes) const noexcept {
    if (ranks <= 1) return 0;
    return allreduce_alpha + 2.0 * (ranks - 1) / ranks * bytes / allreduce_beta;
}

double LinkProfile::send_seconds(double bytes) const noexcept { return send_alpha + bytes / send_beta; }

std::string LinkProfile::describe() const {
    switch (kind) {
        case LinkKind::host_memory: return "MPI through host shared memory";
        case LinkKind::nvlink: return "NVLink";
        case LinkKind::pcie3: case LinkKind::pcie4: case LinkKind::pcie5: {
            const char* gen = kind == LinkKind::pcie3 ? "3.0" : kind == LinkKind::pcie4 ? "4.0" : "5.0";
            return p2p ? fmt::format("PCIe {} with P2P", gen)
                       : fmt::format("PCIe {} without P2P (NCCL through host shared memory)", gen);
        }
    }
    return "?";
}

LinkProfile default_link(LinkKind kind, bool p2p) {
    // all-reduce alpha (us), bus bandwidth (GB/s); send alpha (us), bandwidth (GB/s).
    // Sources: docs/planner.md, "Link defaults".
    switch (kind) {
        case LinkKind::host_memory:
            return make(kind, false, 5, 8, 3, 8, "assumed for MPI on one host until `tpserve check` measures it");
        case LinkKind::pcie3:
            return p2p ? make(kind, true, 15, 11, 5, 11, "PCIe 4.0's bandwidth halved (half the lane rate)")
                       : make(kind, false, 20, 7.5, 15, 7.5, "PCIe 4.0's bandwidth halved (half the lane rate)");
        case LinkKind::pcie4:
            return p2p ? make(kind, true, 15, 22, 5, 22, "tinygrad#36: 4x RTX 4090 with a P2P driver, ~26 GB/s")
                       : make(kind, false, 20, 15, 15, 15, "tinygrad#45/#17: RTX 4090 boxes, NCCL over SHM");
        case LinkKind::pcie5:
            return p2p ? make(kind, true, 24, 38, 5, 38, "voipmonitor/rtx6kpro: 8x PCIe 5.0 with P2P, 37-41 GB/s")
                       : make(kind, false, 25, 28, 15, 28, "NVIDIA/nccl#1639: RTX 5090s over SHM, 28-35 GB/s");
        case LinkKind::nvlink:
            return make(kind, true, 15, 230, 3, 230, "nccl-tests#149: A100 NVLink ~230 GB/s (H100 reaches ~370)");
    }
    return make(kind, p2p, 25, 15, 15, 15, "fallback");
}

LinkProfile link_for_devices(const std::vector<DeviceProfile>& devices, std::optional<LinkKind> kind,
                             std::optional<bool> p2p) {
    TPS_CHECK(!devices.empty(), "no devices");
    LinkKind k = devices.front().link;
    bool all_p2p = true;
    for (const auto& d : devices) {
        if (link_rank(d.link) < link_rank(k)) k = d.link;
        all_p2p = all_p2p && d.p2p;
    }
    const bool any_cpu = std::any_of(devices.begin(), devices.end(),
                                     [](const DeviceProfile& d) { return d.kind == DeviceKind::cpu; });
    if (any_cpu) {
        TPS_CHECK_AS(UsageError, !kind || *kind == LinkKind::host_memory,
                     "--link: cpu devices talk through host memory; drop --link {}", link_kind_name(*kind));
        return default_link(LinkKind::host_memory, false);
    }
    if (kind) k = *kind;
    bool use_p2p = p2p.value_or(all_p2p);
    if (k == LinkKind::nvlink) use_p2p = true;
    return default_link(k, use_p2p);
}

std::optional<LinkKind> parse_link_kind(std::string_view name) {
    const std::string n = to_lower(trim(name));
    if (n == "pcie3") return LinkKind::pcie3;
    if (n == "pcie4") return LinkKind::pcie4;
    if (n == "pcie5") return LinkKind::pcie5;
    if (n == "nvlink") return LinkKind::nvlink;
    return std::nullopt;
}

LinkProfile read_link_profile(const std::filesystem::path& path) {
    std::ifstream in(path);
    TPS_CHECK_AS(InputError, in.good(), "{}: cannot open link profile", path.string());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw InputError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
    }
    const std::string p = path.string();
    auto text = [&](const char* key) {
        return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
    };
    TPS_CHECK_AS(InputError, text("schema") == "tpserve.link/1",
                 "{}: not a tpserve link profile (expected \"schema\": \"tpserve.link/1\")", p);
    auto number = [&](const char* section, const char* key) {
        TPS_CHECK_AS(InputError, j.contains(section) && j[section].is_object() && j[section].contains(key) &&
                                     j[section][key].is_number(),
                     "{}: missing number {}.{}", p, section, key);
        const double v = j[section][key].get<double>();
        TPS_CHECK_AS(InputError, v > 0 && v < 1e9, "{}: {}.{} must be positive, got {}", p, section, key, v);
        return v;
    };
    const auto kind = parse_link_kind(text("kind"));
    TPS_CHECK_AS(InputError, kind || text("kind") == "host-memory",
                 "{}: \"kind\" must be pcie3, pcie4, pcie5, nvlink or host-memory", p);
    TPS_CHECK_AS(InputError, j.contains("p2p") && j["p2p"].is_boolean(), "{}: \"p2p\" must be true or false", p);
    return make(kind.value_or(LinkKind::host_memory), j["p2p"].get<bool>(), number("allreduce", "alpha_us"),
                number("allreduce", "bus_bandwidth_gbs"), number("send", "alpha_us"),
                number("send", "bandwidth_gbs"), text("source").empty() ? fmt::format("link profile {}", p) : text("source"));
}

std::string link_profile_json(const LinkProfile& l) {
    nlohmann::json j = {
        {"schema", "tpserve.link/1"},
        {"kind", std::string(link_kind_name(l.kind))},
        {"p2p", l.p2p},
        {"allreduce", {{"alpha_us", l.allreduce_alpha * 1e6}, {"bus_bandwidth_gbs", l.allreduce_beta / 1e9}}},
        {"send", {{"alpha_us", l.send_alpha * 1e6}, {"bandwidth_gbs", l.send_beta / 1e9}}},
        {"source", l.source},
    };
    return j.dump(2);
}

}  // namespace tps
