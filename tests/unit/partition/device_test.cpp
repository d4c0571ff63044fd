// --gpus, --budget and link parsing; the catalog's sourced numbers; host measurement.
#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/host_probe.h"
#include "tpserve/partition/link.h"

#include "test_requests.h"

#include "tpserve/common/error.h"
#include "tpserve/common/strings.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tps {
namespace {

TEST(Devices, CatalogHoldsTheSourcedNumbers) {
    const auto d = parse_device_list("rtx5090");
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].memory_bytes, 32 * kGiB);
    EXPECT_DOUBLE_EQ(d[0].bandwidth, 1792e9);  // not the 960 GB/s of the RTX 5080
    EXPECT_DOUBLE_EQ(d[0].flops, 209.5e12);
    EXPECT_EQ(d[0].link, LinkKind::pcie5);
    EXPECT_FALSE(d[0].p2p);  // no P2P on the stock driver, no NVLink
    EXPECT_EQ(gpu_catalog().size(), 8u);
    for (const auto& g : gpu_catalog()) EXPECT_FALSE(g.source.empty()) << g.name;
}

TEST(Devices, CountsListsAndCustomCards) {
    EXPECT_EQ(parse_device_list("4xrtx5090").size(), 4u);
    const auto mixed = parse_device_list("rtx5090, RTX5090,rtx4090");
    ASSERT_EQ(mixed.size(), 3u);
    EXPECT_EQ(mixed[2].name, "rtx4090");
    EXPECT_TRUE(mixed[0].same_card(mixed[1]));
    EXPECT_FALSE(mixed[0].same_card(mixed[2]));
    const auto custom = parse_device_list("2xmycard:24:1000:150");
    ASSERT_EQ(custom.size(), 2u);
    EXPECT_EQ(custom[0].memory_bytes, 24 * kGiB);
    EXPECT_DOUBLE_EQ(custom[0].bandwidth, 1000e9);
    EXPECT_DOUBLE_EQ(custom[0].flops, 150e12);
    const auto cpu = parse_device_list("2xcpu:12:20:0.5");
    EXPECT_EQ(cpu[0].kind, DeviceKind::cpu);
    EXPECT_EQ(cpu[0].link, LinkKind::host_memory);
}

TEST(Devices, MeasuredCpusShareTheHost) {
    const auto cpus = parse_device_list("2xcpu");
    const HostMeasurement& h = probe_host();
    ASSERT_EQ(cpus.size(), 2u);
    EXPECT_GT(h.memory_bytes, kGiB);
    EXPECT_EQ(cpus[0].memory_bytes, h.memory_bytes / 2);
    // a measurement, not a speed test: positive and finite (an unoptimised sanitizer build sharing
    // two cores with other tests has measured under 1 GB/s)
    EXPECT_TRUE(h.read_bandwidth > 0 && h.read_bandwidth < 1e13) << h.read_bandwidth;
    EXPECT_TRUE(h.flops > 0 && h.flops < 1e16) << h.flops;
    EXPECT_DOUBLE_EQ(cpus[1].bandwidth, h.read_bandwidth / 2);
    EXPECT_TRUE(cpus[0].measured);
}

void expect_usage(const std::string& spec, const std::string& needle) {
    try {
        parse_device_list(spec);
        FAIL() << "accepted '" << spec << "'";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind("--gpus", 0), 0u) << e.what();
    }
}

TEST(Devices, BadSpecsNameTheProblem) {
    expect_usage("", "no devices");
    expect_usage("4xrtx9090", "unknown device 'rtx9090'");
    expect_usage("0xrtx5090", "count must be 1..64");
    expect_usage("rtx5090,,rtx5090", "empty item");
    expect_usage("card:24:fast:100", "bandwidth 'fast'");
    expect_usage("card:-1:1000:100", "memory '-1'");
    expect_usage("card:24:1000", "name:mem_gb:bw_gbs:tflops");
    expect_usage("65xrtx5090", "count must be 1..64");
}

TEST(Devices, CudaNamesMatchTheCatalog) {
    EXPECT_EQ(catalog_match("NVIDIA GeForce RTX 5090")->name, "rtx5090");
    EXPECT_EQ(catalog_match("NVIDIA H100 80GB HBM3")->name, "h100-sxm");
    EXPECT_EQ(catalog_match("NVIDIA H100 PCIe")->name, "h100-pcie");
    EXPECT_EQ(catalog_match("NVIDIA H200")->name, "h200");
    EXPECT_EQ(catalog_match("NVIDIA A100-SXM4-80GB")->name, "a100-80g");
    EXPECT_FALSE(catalog_match("NVIDIA H100 NVL").has_value());
    EXPECT_FALSE(catalog_match("NVIDIA GeForce RTX 4090 Laptop GPU").has_value());
    EXPECT_FALSE(catalog_match("NVIDIA GeForce RTX 3090 Ti").has_value());
    EXPECT_FALSE(catalog_match("NVIDIA GH200 480GB").has_value());
    EXPECT_FALSE(catalog_match("NVIDIA A100 80GB PCIe").has_value());
    EXPECT_FALSE(catalog_match("Tesla T4").has_value());
}

TEST(Budget, DefaultsAreFractionsOfCapacity) {
    const auto devs = parse_device_list("rtx5090,rtx4090,cpu:16:20:1");
    const auto bands = parse_budget("", devs);
    EXPECT_EQ(bands[0].min_bytes, 20 * kGiB);
    EXPECT_EQ(bands[0].max_bytes, 24 * kGiB);
    EXPECT_EQ(bands[1].min_bytes, 15 * kGiB);
    EXPECT_EQ(bands[1].max_bytes, 18 * kGiB);
    EXPECT_EQ(bands[2].min_bytes, 0);  // a host is shared: no floor
    EXPECT_EQ(bands[2].max_bytes, 12 * kGiB);
}

TEST(Budget, OneForAllOrOnePerCardAndEdges) {
    const auto devs = parse_device_list("2xrtx5090,rtx4090");
    const auto all = parse_budget("20:24", devs);
    EXPECT_EQ(all[2].max_bytes, 24 * kGiB);  // equal to the 4090's capacity is allowed
    const auto each = parse_budget("20:24,21:23,15.5:18", devs);
    EXPECT_EQ(each[1].min_bytes, 21 * kGiB);
    EXPECT_EQ(each[2].min_bytes, static_cast<int64_t>(15.5 * static_cast<double>(kGiB)));
    const auto point = parse_budget("22:22", devs);  // min == max is a legal (tight) band
    EXPECT_TRUE(point[0].contains(22 * kGiB));
    EXPECT_FALSE(point[0].contains(22 * kGiB + 1));
    EXPECT_FALSE(point[0].contains(22 * kGiB - 1));
    EXPECT_THROW(parse_budget("24:20", devs), UsageError);          // min above max
    EXPECT_THROW(parse_budget("20:25", devs), UsageError);          // above the 4090's 24 GiB
    EXPECT_THROW(parse_budget("20:24,20:24", devs), UsageError);    // two bands for three cards
    EXPECT_THROW(parse_budget("twenty:24", devs), UsageError);
    EXPECT_THROW(parse_budget("-1:24", devs), UsageError);
    EXPECT_THROW(parse_budget("20", devs), UsageError);
    EXPECT_THROW(parse_budget("0:1e10", devs), UsageError);     // absurd: refused, not overflowed
    EXPECT_THROW(parse_budget("1e300:1e300", devs), UsageError);
}

TEST(Link, DefaultsFollowTheCards) {
    const auto l = link_for_devices(parse_device_list("4xrtx5090"), std::nullopt, std::nullopt);
    EXPECT_EQ(l.kind, LinkKind::pcie5);
    EXPECT_FALSE(l.p2p);
    EXPECT_NEAR(l.allreduce_alpha, 25e-6, 1e-12);
    EXPECT_NEAR(l.allreduce_beta, 28e9, 1);
    // a mixed box is as slow as its slowest link
    EXPECT_EQ(link_for_devices(parse_device_list("rtx5090,rtx4090"), std::nullopt, std::nullopt).kind, LinkKind::pcie4);
    EXPECT_TRUE(link_for_devices(parse_device_list("4xh100-sxm"), std::nullopt, std::nullopt).p2p);
    EXPECT_TRUE(link_for_devices(parse_device_list("2xrtx5090"), LinkKind::pcie5, true).p2p);
    EXPECT_THROW(link_for_devices(parse_device_list("2xcpu:8:10:1"), LinkKind::nvlink, std::nullopt), UsageError);
    // ring all-reduce: alpha + 2(n-1)/n * bytes / beta
    EXPECT_NEAR(l.allreduce_seconds(4, 28e6), 25e-6 + 1.5e-3, 1e-12);
    EXPECT_EQ(l.allreduce_seconds(1, 1e9), 0.0);
}

TEST(Link, ProfileFilesRoundTripAndBadFilesAreErrors) {
    namespace fs = std::filesystem;
    LinkProfile l = default_link(LinkKind::pcie4, false);
    l.allreduce_alpha = 17e-6;
    l.source = "measured";
    const fs::path p = test::temp_path("tps-link.json");
    std::ofstream(p) << link_profile_json(l);
    const LinkProfile back = read_link_profile(p);
    EXPECT_NEAR(back.allreduce_alpha, 17e-6, 1e-12);
    EXPECT_EQ(back.kind, LinkKind::pcie4);
    EXPECT_EQ(back.source, "measured");
    std::ofstream(p) << R"({"schema": "tpserve.link/1", "kind": "pcie5", "p2p": false, "allreduce": {"alpha_us": -1,
                          "bus_bandwidth_gbs": 20}, "send": {"alpha_us": 10, "bandwidth_gbs": 20}})";
    EXPECT_THROW(read_link_profile(p), InputError);
    std::ofstream(p) << R"({"schema": "something-else"})";
    EXPECT_THROW(read_link_profile(p), InputError);
    std::ofstream(p) << R"({"schema": "tpserve.link/1", "kind": 5, "p2p": false})";
    EXPECT_THROW(read_link_profile(p), InputError);
    std::ofstream(p) << R"({"schema": 1})";
    EXPECT_THROW(read_link_profile(p), InputError);
    std::ofstream(p) << "[1, 2";
    EXPECT_THROW(read_link_profile(p), InputError);
    fs::remove(p);
    EXPECT_THROW(read_link_profile(p), InputError);
}

}  // namespace
}  // namespace tps
