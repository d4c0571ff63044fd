// Host measurement for `cpu` devices. Bandwidth: every hardware thread sums its slice of a 256 MiB
// buffer (far larger than any cache), best of 3. Compute: every thread runs independent
// 8-wide FMA chains; with AVX2+FMA when the CPU has them (checked at run time), else plain code.
#include "tpserve/partition/host_probe.h"

#include "tpserve/common/strings.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace tps {
namespace {

using clock_type = std::chrono::steady_clock;

int64_t mem_total() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    int64_t kib = 0;
    std::string unit;
    while (in >> key >> kib >> unit) {
        if (key == "MemTotal:") return kib * 1024;
    }
    return 0;
}

typedef float v8f __attribute__((vector_size(32)));

template <int kChains>
float fma_chains(int64_t iters) {
    v8f acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = v8f{} + static_cast<float>(c) * 1e-3f;
    const v8f mul = v8f{} + 0.999999f;
    const v8f add = v8f{} + 1e-7f;
    for (int64_t i = 0; i < iters; ++i) {
        for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * mul + add;
    }
    float s = 0;
    for (int c = 0; c < kChains; ++c) {
        for (int k = 0; k < 8; ++k) s += acc[c][k];
    }
    return s;
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2(int64_t iters) {
    // Same chains, compiled to vfmadd; 10 chains cover the FMA latency on two ports.
    v8f acc[10];
    for (int c = 0; c < 10; ++c) acc[c] = v8f{} + static_cast<float>(c) * 1e-3f;
    const v8f mul = v8f{} + 0.999999f;
    const v8f add = v8f{} + 1e-7f;
    for (int64_t i = 0; i < iters; ++i) {
        for (int c = 0; c < 10; ++c) acc[c] = acc[c] * mul + add;
    }
    float s = 0;
    for (int c = 0; c < 10; ++c) {
        for (int k = 0; k < 8; ++k) s += acc[c][k];
    }
    return s;
}

template <class F>
double parallel_seconds(int threads, F&& body) {
    std::vector<std::thread> pool;
    const auto t0 = clock_type::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back(body, t);
    for (auto& th : pool) th.join();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

volatile float g_sink = 0;  // keeps the measured loops from being optimised away

HostMeasurement measure() {
    HostMeasurement m;
    m.memory_bytes = mem_total();
    m.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    const size_t n = static_cast<size_t>(256 * kMiB / sizeof(float));
    std::vector<float> buf(n);
    for (size_t i = 0; i < n; ++i) buf[i] = static_cast<float>(i & 1023);
    std::vector<float> sinks(static_cast<size_t>(m.threads));
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
        const double seconds = parallel_seconds(m.threads, [&](int t) {
            const size_t chunk = n / static_cast<size_t>(m.threads);
            const float* p = buf.data() + chunk * static_cast<size_t>(t);
            float acc[16] = {};
            for (size_t i = 0; i + 16 <= chunk; i += 16) {
                for (int k = 0; k < 16; ++k) acc[k] += p[i + static_cast<size_t>(k)];
            }
            float sum = 0;
            for (float a : acc) sum += a;
            sinks[static_cast<size_t>(t)] += sum;
        });
        best = std::min(best, seconds);
    }
    m.read_bandwidth = static_cast<double>(n * sizeof(float)) / best;

    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int chains = avx2 ? 10 : 8;
    const int64_t iters = 2'000'000;
    const double s = parallel_seconds(m.threads, [&](int t) {
        sinks[static_cast<size_t>(t)] += avx2 ? fma_chains_avx2(iters) : fma_chains<8>(iters);
    });
    for (float x : sinks) g_sink = g_sink + x;
    m.flops = 2.0 * 8 * chains * static_cast<double>(iters) * m.threads / s;
    return m;
}

}  // namespace

const HostMeasurement& probe_host() {
    static const HostMeasurement m = measure();
    return m;
}

}  // namespace tps
