// `tpserve check`: a preflight under mpirun before serving. Every rank reports its host, its
// device and that device's free memory; rank 0 prints them, the peer-to-peer matrix of its host's
// GPUs, and a timed all-reduce at 8 KB and 32 MB on every communicator (the world, and each
// stage's TP group of --plan) with the alpha and beta they imply, and a ping-pong between ranks 0
// and 1 for the stage hand-over. It writes the measured link profile for `tpserve plan
// --link-profile`, and with --plan says whether each rank's predicted memory fits what is free.
#include "cli.h"
#include "commands.h"
#include "mpi_session.h"

#include "tpserve/comm/link_probe.h"
#include "tpserve/comm/parallel_mapping.h"
#include "tpserve/comm/nccl_communicator.h"
#include "tpserve/common/strings.h"
#include "tpserve/engine/cuda_devices.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/plan_json.h"

#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

namespace tps::cli {
namespace {

constexpr int64_t kSmall = 8 << 10;
constexpr int64_t kLarge = 32 << 20;

// What one rank sees, in a fixed-size record every rank can gather.
struct RankView {
    int32_t gpu = 0;  // 1: a CUDA device, 0: the CPU
    int32_t device = 0;
    int64_t total_bytes = 0;
    int64_t free_bytes = 0;
    int32_t threads = 0;
    char host[64] = {};
    char name[64] = {};
};

// MemTotal and MemAvailable of /proc/meminfo, bytes.
std::pair<int64_t, int64_t> host_memory() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    int64_t value = 0;
    std::string unit;
    int64_t total = 0, available = 0;
    while (in >> key >> value) {
        std::getline(in, unit);
        if (key == "MemTotal:") total = value * 1024;
        if (key == "MemAvailable:") available = value * 1024;
    }
    return {total, available};
}

int local_rank() {
    for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
        if (const char* s = std::getenv(v)) return std::atoi(s);
    }
    return 0;
}

std::string gib(int64_t b) { return fmt::format("{:.1f} GiB", static_cast<double>(b) / 1073741824.0); }

// The all-reduce fit of one communicator, printed; nullopt when it has one rank.
// `host`: the group's ranks with host buffers (time_all_reduce)
std::optional<AlphaBeta> measure_group(Communicator& group, Communicator& host, void* buffer, int repetitions,
                                       std::string& report) {
    if (group.size() < 2) return std::nullopt;
    const LinkTiming small = time_all_reduce(group, host, buffer, kSmall, repetitions);
    const LinkTiming large = time_all_reduce(group, host, buffer, kLarge, repetitions);
    const AlphaBeta ab = fit_all_reduce(group.size(), small, large);
    report += fmt::format("  all-reduce over {}: 8 KB {:.1f} us, 32 MB {:.2f} ms -> alpha {:.1f} us, bus bandwidth {:.2f} GB/s\n",
                          group.name(), small.seconds * 1e6, large.seconds * 1e3, ab.alpha * 1e6, ab.beta / 1e9);
    return ab;
}

}  // namespace

int run_check(int argc, char** argv) {
    cxxopts::Options options("tpserve check",
                             "Preflight under mpirun -np N: ranks, hosts, devices, free memory, GPU peer access, and "
                             "timed all-reduces giving the link profile for `tpserve plan --link-profile`.");
    options.set_width(100);
    // clang-format off
    options.add_options()
        ("plan", "a plan to check against: its world size, each rank's predicted memory, its TP groups", cxxopts::value<std::string>())
        ("devices", "what the ranks use: auto (GPUs when every rank has one, else cpu), gpu or cpu", cxxopts::value<std::string>()->default_value("auto"))
        ("o,out", "where to write the measured link profile", cxxopts::value<std::string>()->default_value("tpserve-link.json"))
        ("repetitions", "timed repetitions of each measurement (the median counts)", cxxopts::value<std::string>()->default_value("7"))
        ("deadline", "seconds any rank waits on another before it gives up", cxxopts::value<std::string>()->default_value("60"))
        ("h,help", "show this help");
    // clang-format on
    const auto args = parse(options, argc, argv);
    if (args.count("help")) {
        std::fputs(options.help().c_str(), stdout);
        return kExitOk;
    }
    const std::string mode = args["devices"].as<std::string>();
    TPS_CHECK_AS(UsageError, mode == "auto" || mode == "gpu" || mode == "cpu", "--devices: '{}' is not auto, gpu or cpu", mode);
    const int repetitions = static_cast<int>(int_flag(args, "repetitions", 1, 1000));
    const double deadline = seconds_flag(args, "deadline");
    const std::string out_path = args["out"].as<std::string>();
    TPS_CHECK_AS(UsageError, launched_by_mpi(),
                 "run it under the launcher as you will serve: mpirun -np N tpserve check (one rank has no links to measure)");

    MpiWorld& mpi = mpi_world();
    mpi.set_deadline(deadline);
    auto world = mpi.world();
    const int rank = mpi.rank();
    const int n = mpi.size();

    // the devices: a GPU per rank (by local rank) when every rank has one
    const auto gpus = list_cuda_devices();
    const int lrank = local_rank();
    bool use_gpu = mode == "gpu" || (mode == "auto" && lrank < static_cast<int>(gpus.size()) && nccl_built());
    int all_gpu = use_gpu ? 1 : 0;
    world->all_reduce_sum(&all_gpu, 1, DType::i32, "whether every rank has a GPU");
    agree(*world, "use its device", [&] {
        if (mode == "gpu") {
            TPS_CHECK_AS(UsageError, nccl_built(), "--devices gpu: this tpserve was built without NCCL");
            TPS_CHECK_AS(UsageError, lrank < static_cast<int>(gpus.size()),
                         "--devices gpu: local rank {} but this host shows {} CUDA devices ({})", lrank, gpus.size(),
                         cuda_unavailable_reason());
        }
    }, 600);
    use_gpu = all_gpu == n;

    RankView mine;
    mine.gpu = use_gpu ? 1 : 0;
    mine.threads = static_cast<int32_t>(std::thread::hardware_concurrency());
    std::strncpy(mine.host, mpi.host(rank).c_str(), sizeof mine.host - 1);
    if (use_gpu) {
        const CudaDevice& g = gpus.at(static_cast<size_t>(lrank));
        mine.device = g.index;
        mine.total_bytes = g.total_bytes;
        mine.free_bytes = g.free_bytes;
        std::strncpy(mine.name, g.name.c_str(), sizeof mine.name - 1);
    } else {
        std::tie(mine.total_bytes, mine.free_bytes) = host_memory();
        std::strncpy(mine.name, "cpu (host memory, shared by the ranks on the host)", sizeof mine.name - 1);
    }
    std::vector<RankView> views(static_cast<size_t>(n));
    world->all_gather(&mine, views.data(), sizeof mine, "what each rank sees");

    std::string report = fmt::format("tpserve check: {} ranks on {} host(s), {}\n", n, [&] {
        std::set<std::string> hosts;
        for (const auto& v : views) hosts.insert(v.host);
        return hosts.size();
    }(), use_gpu ? "one GPU per rank, NCCL between them" : "CPU ranks, MPI between them");
    report += "  rank  host             device                                    free / total\n";
    for (int r = 0; r < n; ++r) {
        const RankView& v = views[static_cast<size_t>(r)];
        const std::string dev = v.gpu ? fmt::format("GPU {}: {}", v.device, v.name) : std::string(v.name);
        report += fmt::format("  {:>4}  {:<16} {:<41} {} / {}\n", r, v.host, dev, gib(v.free_bytes), gib(v.total_bytes));
    }
    // peer-to-peer between this host's GPUs
    const auto peers = cuda_peer_access();
    if (peers.empty()) {
        report += fmt::format("peer-to-peer: no CUDA devices here ({})\n", cuda_unavailable_reason());
    } else {
        report += "peer-to-peer access between this host's GPUs (row reads column):\n       ";
        for (size_t b = 0; b < peers.size(); ++b) report += fmt::format(" GPU{:<2}", b);
        report += "\n";
        for (size_t a = 0; a < peers.size(); ++a) {
            report += fmt::format("  GPU{:<2}", a);
            for (size_t b = 0; b < peers.size(); ++b) report += fmt::format(" {:<5}", a == b ? "-" : peers[a][b] ? "yes" : "no");
            report += "\n";
        }
    }

    // the plan's groups, when given
    std::optional<Plan> plan;
    std::string plan_text;
    if (args.count("plan")) {
        agree(*world, "read the plan", [&] {
            if (rank == 0) {
                std::ifstream in(args["plan"].as<std::string>());
                TPS_CHECK_AS(InputError, in.good(), "--plan: cannot read '{}'", args["plan"].as<std::string>());
                plan_text.assign(std::istreambuf_iterator<char>(in), {});
            }
        }, 600);
        plan_text = broadcast_string(*world, plan_text, "the plan");
        agree(*world, "accept the plan", [&] {
            plan = plan_from_json(nlohmann::json::parse(plan_text), args["plan"].as<std::string>());
            const ParallelMapping check_world(*plan, n, rank);
            (void)check_world;
        }, 600);
    }

    // timed collectives: each communicator, over MPI (host buffers) or NCCL (device buffers)
    std::vector<float> host(static_cast<size_t>(kLarge / 4), 1.0f);
    std::unique_ptr<DeviceBuffer> device;
    if (use_gpu) device = std::make_unique<DeviceBuffer>(mine.device, kLarge);
    void* buffer = use_gpu ? device->data() : host.data();
    auto fast = [&](Communicator& over) -> std::unique_ptr<Communicator> {
        return use_gpu ? make_nccl_communicator(over, mine.device) : nullptr;
    };
    report += use_gpu ? "links (NCCL, device buffers):\n" : "links (MPI, host buffers):\n";
    std::unique_ptr<Communicator> world_fast = fast(*world);
    Communicator& wc = world_fast ? *world_fast : *world;
    std::optional<AlphaBeta> allreduce = measure_group(wc, *world, buffer, repetitions, report);
    if (plan) {
        const ParallelMapping map(*plan, n, rank);
        for (size_t s = 0; s < plan->stages.size(); ++s) {
            const bool member = static_cast<int>(s) == map.stage() && map.tp_size() > 1;
            auto group = mpi.split(member ? static_cast<int>(s) : -1, map.tp_rank(), fmt::format("the tp group of stage {}", s));
            if (!group) continue;
            auto group_fast = fast(*group);
            std::string mine_report;
            const auto ab = measure_group(group_fast ? *group_fast : *group, *group, buffer, repetitions, mine_report);
            // the group's first rank tells rank 0
            if (group->rank() == 0 && rank != 0) world->post_message({mine_report.begin(), mine_report.end()}, 0, "a group's timings");
            if (rank == 0) report += mine_report;
            (void)ab;
        }
        if (rank == 0) {
            for (size_t s = 0; s < plan->stages.size(); ++s) {
                const int first = plan->stages[s].ranks.front();
                if (plan->stages[s].tp > 1 && first != 0) {
                    const auto bytes = world->receive_message(first, "a group's timings");
                    report.append(bytes.begin(), bytes.end());
                }
            }
        }
        world->flush_posted("the groups' timings");
    }
    std::optional<AlphaBeta> send;
    if (n >= 2) {
        const LinkTiming small = time_ping_pong(wc, 0, 1, buffer, kSmall, repetitions);
        const LinkTiming large = time_ping_pong(wc, 0, 1, buffer, kLarge, repetitions);
        if (rank == 0) {
            send = fit_send(small, large);
            report += fmt::format("  send rank 0 -> rank 1: 8 KB {:.1f} us, 32 MB {:.2f} ms -> alpha {:.1f} us, {:.2f} GB/s\n",
                                  small.seconds * 1e6, large.seconds * 1e3, send->alpha * 1e6, send->beta / 1e9);
        }
    }

    if (rank == 0) {
        if (plan) {
            report += "memory the plan predicts per rank against what is free:\n";
            for (const auto& rp : plan->per_rank) {
                const RankView& v = views[static_cast<size_t>(rp.rank)];
                const bool fits = rp.bytes.total() <= v.free_bytes;
                report += fmt::format("  rank {}: needs {}, {} free on {}: {}\n", rp.rank, gib(rp.bytes.total()),
                                      gib(v.free_bytes), v.gpu ? fmt::format("GPU {}", v.device) : std::string("the host"),
                                      fits ? "fits" : "DOES NOT FIT");
            }
        }
        if (allreduce && send) {
            LinkProfile link;
            if (use_gpu) {
                std::vector<DeviceProfile> cards;
                for (const auto& g : gpus) {
                    if (auto p = catalog_match(g.name)) cards.push_back(*p);
                }
                link = cards.empty() ? default_link(LinkKind::pcie4, false) : link_for_devices(cards, std::nullopt, std::nullopt);
                bool all_peer = true;
                for (const auto& row : peers) {
                    for (bool b : row) all_peer = all_peer && b;
                }
                link.p2p = !peers.empty() && all_peer;
            } else {
                link = default_link(LinkKind::host_memory, false);
            }
            link.allreduce_alpha = allreduce->alpha;
            link.allreduce_beta = allreduce->beta;
            link.send_alpha = send->alpha;
            link.send_beta = send->beta;
            link.source = fmt::format("measured by tpserve check on {} ranks ({})", n, use_gpu ? "NCCL" : "MPI");
            std::ofstream out(out_path);
            TPS_CHECK_AS(UsageError, out.good(), "--out: cannot write '{}'", out_path);
            out << link_profile_json(link) << '\n';
            TPS_CHECK_AS(UsageError, out.good(), "--out: writing '{}' failed", out_path);
            report += fmt::format("wrote the link profile to {} (tpserve plan --link-profile {})\n", out_path, out_path);
        }
        std::fputs(report.c_str(), stdout);
        std::fflush(stdout);
    }
    world->barrier("the end of the check");
    return kExitOk;
}

}  // namespace tps::cli
