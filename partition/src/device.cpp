// The GPU catalog and --gpus parsing. Every number in the catalog is cited in docs/planner.md
// ("GPU catalog"); `source` names the document. Capacities are the nominal GiB the card is sold
// as (nvidia-smi shows slightly less, e.g. 32607 MiB on an RTX 5090): the default band, 62.5-75%
// of capacity, leaves far more headroom than that difference.
#include "tpserve/partition/device.h"

#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"
#include "tpserve/partition/host_probe.h"

#include <fmt/format.h>

namespace tps {
namespace {

DeviceProfile gpu(std::string name, int sm, double mem_gib, double bw_gbs, double tflops, LinkKind link,
                  bool p2p, std::string source) {
    DeviceProfile d;
    d.name = std::move(name);
    d.sm = sm;
    d.kind = DeviceKind::gpu;
    d.memory_bytes = static_cast<int64_t>(mem_gib * static_cast<double>(kGiB));
    d.bandwidth = bw_gbs * 1e9;
    d.flops = tflops * 1e12;
    d.link = link;
    d.p2p = p2p;
    d.source = std::move(source);
    return d;
}

std::string known_names() {
    std::string s;
    for (const auto& d : gpu_catalog()) s += d.name + ", ";
    return s + "cpu";
}

DeviceProfile parse_custom(const std::string& item) {
    // name:mem_gb:bw_gbs:tflops
    const auto parts = split(item, ':');
    TPS_CHECK_AS(UsageError, parts.size() == 4,
                 "--gpus: '{}' is not name:mem_gb:bw_gbs:tflops (e.g. mycard:24:1008:165)", item);
    const std::string name = to_lower(trim(parts[0]));
    TPS_CHECK_AS(UsageError, !name.empty(), "--gpus: '{}' has an empty card name", item);
    const auto mem = parse_double(parts[1]);
    const auto bw = parse_double(parts[2]);
    const auto tf = parse_double(parts[3]);
    TPS_CHECK_AS(UsageError, mem && *mem > 0 && *mem < 1e6, "--gpus: '{}': memory '{}' must be a positive number of GB",
                 item, parts[1]);
    TPS_CHECK_AS(UsageError, bw && *bw > 0 && *bw < 1e6, "--gpus: '{}': bandwidth '{}' must be a positive number of GB/s",
                 item, parts[2]);
    TPS_CHECK_AS(UsageError, tf && *tf > 0 && *tf < 1e6, "--gpus: '{}': compute '{}' must be a positive number of TFLOPS",
                 item, parts[3]);
    DeviceProfile d;
    d.name = name;
    d.memory_bytes = static_cast<int64_t>(*mem * static_cast<double>(kGiB));
    d.bandwidth = *bw * 1e9;
    d.flops = *tf * 1e12;
    if (name == "cpu") {
        d.kind = DeviceKind::cpu;
        d.link = LinkKind::host_memory;
        d.source = "given on the command line";
    } else {
        d.kind = DeviceKind::gpu;
        d.link = LinkKind::pcie4;  // conservative: no P2P over PCIe 4.0 unless --link says otherwise
        d.source = "custom profile given on the command line";
        for (const auto& c : gpu_catalog()) {
            if (c.name == name) {
                d.link = c.link;
                d.p2p = c.p2p;
            }
        }
    }
    return d;
}

}  // namespace

std::string_view link_kind_name(LinkKind k) noexcept {
    switch (k) {
        case LinkKind::pcie3: return "pcie3";
        case LinkKind::pcie4: return "pcie4";
        case LinkKind::pcie5: return "pcie5";
        case LinkKind::nvlink: return "nvlink";
        case LinkKind::host_memory: return "host-memory";
    }
    return "?";
}

bool DeviceProfile::same_card(const DeviceProfile& o) const noexcept {
    return name == o.name && kind == o.kind && memory_bytes == o.memory_bytes && bandwidth == o.bandwidth &&
           flops == o.flops;
}

const std::vector<DeviceProfile>& gpu_catalog() {
    // name, sm, memory GiB, bandwidth GB/s, dense BF16 TFLOPS (FP32 accumulate), host link, P2P.
    static const std::vector<DeviceProfile> catalog = {
        gpu("rtx5090", 120, 32, 1792, 209.5, LinkKind::pcie5, false,
            "NVIDIA RTX Blackwell GPU Architecture whitepaper, Table 3"),
        gpu("rtx4090", 89, 24, 1008, 165.2, LinkKind::pcie4, false,
            "NVIDIA Ada GPU Architecture whitepaper, Appendix A"),
        gpu("rtx3090", 86, 24, 936, 71, LinkKind::pcie4, false,
            "NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A"),
        gpu("l40s", 89, 48, 864, 362.05, LinkKind::pcie4, true, "NVIDIA L40S datasheet"),
        gpu("a100-80g", 80, 80, 2039, 312, LinkKind::nvlink, true, "NVIDIA A100 datasheet (80GB SXM4)"),
        gpu("h100-pcie", 90, 80, 2000, 756, LinkKind::pcie5, true, "NVIDIA H100 PCIe product brief, H100 datasheet"),
        gpu("h100-sxm", 90, 80, 3350, 989, LinkKind::nvlink, true, "NVIDIA H100 datasheet (SXM)"),
        gpu("h200", 90, 141, 4800, 989, LinkKind::nvlink, true, "NVIDIA H200 datasheet (SXM)"),
    };
    return catalog;
}

std::vector<DeviceProfile> parse_device_list(std::string_view spec) {
    TPS_CHECK_AS(UsageError, !trim(spec).empty(), "--gpus: no devices given (e.g. 4xrtx5090 or 2xcpu)");
    std::vector<DeviceProfile> out;
    int cpu_count = 0;
    for (const std::string& raw : split(spec, ',')) {
        std::string item = to_lower(trim(raw));
        TPS_CHECK_AS(UsageError, !item.empty(), "--gpus: empty item in '{}'", spec);
        int64_t count = 1;
        // "4xrtx5090": a count, an 'x', then the card
        if (const size_t x = item.find('x'); x != std::string::npos && x > 0 &&
                                             item.find_first_not_of("0123456789") == x) {
            const auto n = parse_int(item.substr(0, x));
            TPS_CHECK_AS(UsageError, n && *n >= 1 && *n <= 64, "--gpus: '{}': the count must be 1..64", raw);
            count = *n;
            item = item.substr(x + 1);
        }
        DeviceProfile d;
        if (item.find(':') != std::string::npos) {
            d = parse_custom(item);
        } else if (item == "cpu") {
            d.name = "cpu";
            d.kind = DeviceKind::cpu;
            d.link = LinkKind::host_memory;
            d.measured = true;  // shares of the host are filled in below, once all cpu items are known
        } else {
            bool found = false;
            for (const auto& c : gpu_catalog()) {
                if (c.name == item) {
                    d = c;
                    found = true;
                }
            }
            TPS_CHECK_AS(UsageError, found, "--gpus: unknown device '{}' (known: {}; or name:mem_gb:bw_gbs:tflops)",
                         item, known_names());
        }
        for (int64_t i = 0; i < count; ++i) out.push_back(d);
        if (d.kind == DeviceKind::cpu && d.measured) cpu_count += static_cast<int>(count);
    }
    TPS_CHECK_AS(UsageError, out.size() <= 64, "--gpus: {} devices; at most 64 are supported", out.size());
    if (cpu_count > 0) {
        // CPU ranks on one host share its memory and its memory bus.
        const HostMeasurement& h = probe_host();
        for (auto& d : out) {
            if (d.kind != DeviceKind::cpu || !d.measured) continue;
            d.memory_bytes = h.memory_bytes / cpu_count;
            d.bandwidth = h.read_bandwidth / cpu_count;
            d.flops = h.flops / cpu_count;
            d.source = fmt::format("measured on this host ({} threads), shared by {} cpu ranks", h.threads,
                                   cpu_count);
        }
    }
    return out;
}

}  // namespace tps

namespace tps {

std::optional<DeviceProfile> catalog_match(std::string_view cuda_name) {
    const std::string n = to_lower(cuda_name);
    auto has = [&](std::string_view s) { return n.find(s) != std::string::npos; };
    auto pick = [](std::string_view key) -> std::optional<DeviceProfile> {
        for (const auto& d : gpu_catalog()) {
            if (d.name == key) return d;
        }
        return std::nullopt;
    };
    // laptop parts (and the 3090 Ti) share names with other cards but not their memory or
    // bandwidth; GH200 is not an H200;
    // an A100 PCIe card is not the SXM4 part the catalog describes
    if (has("laptop") || has("mobile") || has("gh200") || has(" ti")) return std::nullopt;
    if (has("rtx 5090")) return pick("rtx5090");
    if (has("rtx 4090")) return pick("rtx4090");
    if (has("rtx 3090")) return pick("rtx3090");
    if (has("l40s")) return pick("l40s");
    if (has("a100") && has("80") && !has("pcie")) return pick("a100-80g");
    if (has("h200") && !has("nvl")) return pick("h200");
    if (has("h100") && !has("nvl")) return has("pcie") ? pick("h100-pcie") : pick("h100-sxm");
    return std::nullopt;
}

}  // namespace tps
