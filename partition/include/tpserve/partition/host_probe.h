// Measures the host for `cpu` devices: total memory (/proc/meminfo), memory read bandwidth and f32
// FMA throughput over all hardware threads. About 0.3 s, done once per process.
#pragma once

#include <cstdint>

namespace tps {

struct HostMeasurement {
    int64_t memory_bytes = 0;  // MemTotal
    double read_bandwidth = 0;  // bytes/s, all threads reading one large buffer
    double flops = 0;           // f32 FLOP/s, all threads (an FMA counts 2)
    int threads = 0;
};

const HostMeasurement& probe_host();

}  // namespace tps
