#include "tpserve/comm/link_probe.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace tps {
namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

AlphaBeta fit(double factor, LinkTiming small, LinkTiming large, const char* what) {
    TPS_CHECK(large.bytes > small.bytes, "{}: the large message must be larger", what);
    TPS_CHECK(large.seconds > small.seconds,
              "{}: {} bytes took no longer than {} bytes ({:.3g} s against {:.3g} s): the timings are noise", what,
              large.bytes, small.bytes, large.seconds, small.seconds);
    TPS_CHECK(small.seconds > 0, "{}: {} bytes took no time: the timings are noise", what, small.bytes);
    AlphaBeta ab;
    ab.beta = factor * static_cast<double>(large.bytes - small.bytes) / (large.seconds - small.seconds);
    // A latency the two points cannot resolve (the small message no slower than its bytes at the
    // fitted bandwidth: noise, or a latency below what the timings show) is bounded by the small
    // message's whole time: positive, as every link profile's is (tpserve plan refuses 0).
    const double alpha = small.seconds - factor * static_cast<double>(small.bytes) / ab.beta;
    ab.alpha = alpha > 0 ? alpha : small.seconds;
    return ab;
}

}  // namespace

LinkTiming time_all_reduce(Communicator& group, Communicator& host, void* buffer, int64_t bytes, int repetitions) {
    TPS_CHECK(repetitions >= 1 && bytes % 4 == 0, "time_all_reduce: {} repetitions of {} bytes", repetitions, bytes);
    TPS_CHECK(!host.device_buffers() && host.size() == group.size() && host.rank() == group.rank(),
              "time_all_reduce: the timings go over {}, which is not {}'s ranks with host buffers", host.name(),
              group.name());
    std::vector<double> t;
    group.barrier("line up for the timed all-reduce");
    group.all_reduce_sum(buffer, bytes / 4, DType::f32, "timed all-reduce (warm-up)");
    for (int i = 0; i < repetitions; ++i) {
        group.barrier("line up for the timed all-reduce");
        const double t0 = now();
        group.all_reduce_sum(buffer, bytes / 4, DType::f32, "timed all-reduce");
        t.push_back(now() - t0);
    }
    // the slowest rank's time is the collective's
    double mine = median(t);
    std::vector<double> all(static_cast<size_t>(group.size()));
    host.all_gather(&mine, all.data(), sizeof mine, "all-reduce timings");
    return {bytes, *std::max_element(all.begin(), all.end())};
}

LinkTiming time_ping_pong(Communicator& group, int a, int b, void* buffer, int64_t bytes, int repetitions) {
    TPS_CHECK(a != b && repetitions >= 1, "time_ping_pong: ranks {} and {}", a, b);
    const int me = group.rank();
    if (me != a && me != b) return {bytes, 0};
    std::vector<double> t;
    for (int i = 0; i <= repetitions; ++i) {
        const double t0 = now();
        if (me == a) {
            group.send(buffer, bytes, b, "timed ping");
            group.recv(buffer, bytes, b, "timed pong");
        } else {
            group.recv(buffer, bytes, a, "timed ping");
            group.send(buffer, bytes, a, "timed pong");
        }
        if (i > 0) t.push_back((now() - t0) / 2);  // the first round warms up
    }
    return {bytes, median(t)};
}

AlphaBeta fit_all_reduce(int ranks, LinkTiming small, LinkTiming large) {
    TPS_CHECK(ranks >= 2, "an all-reduce needs at least two ranks");
    return fit(2.0 * (ranks - 1) / ranks, small, large, "all-reduce");
}

AlphaBeta fit_send(LinkTiming small, LinkTiming large) { return fit(1.0, small, large, "send"); }

}  // namespace tps
