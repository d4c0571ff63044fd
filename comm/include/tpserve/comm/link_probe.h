// Measuring the links between ranks for `tpserve check`: timed all-reduces and ping-pongs at a
// small and a large size, and the fit of the planner's link model to them (partition/link.h):
// all-reduce t = alpha + 2(n-1)/n * M / beta, hand-over t = alpha + M / beta.
#pragma once

#include "tpserve/comm/communicator.h"

#include <cstdint>

namespace tps {

struct LinkTiming {
    int64_t bytes = 0;
    double seconds = 0;  // median of the timed repetitions
};

// `buffer` holds bytes of f32 (host memory for MPI, device memory for NCCL). Collective: every
// rank of the group calls it with the same arguments. The ranks' timings are gathered over
// `host`, the same ranks with host buffers: `group` itself for MPI, the group an NCCL
// communicator was built over (its collectives take device memory only).
LinkTiming time_all_reduce(Communicator& group, Communicator& host, void* buffer, int64_t bytes, int repetitions);
// One-way time between group ranks a and b (half a round trip); the others return {bytes, 0}.
LinkTiming time_ping_pong(Communicator& group, int a, int b, void* buffer, int64_t bytes, int repetitions);

struct AlphaBeta {
    double alpha = 0;  // seconds
    double beta = 0;   // bytes per second
};
// tps::Error when the large message was not slower than the small one (nothing to fit).
AlphaBeta fit_all_reduce(int ranks, LinkTiming small, LinkTiming large);
AlphaBeta fit_send(LinkTiming small, LinkTiming large);

}  // namespace tps
