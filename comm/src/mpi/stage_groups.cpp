#include "tpserve/comm/stage_groups.h"

#include <fmt/format.h>

namespace tps {

StageGroups make_stage_groups(MpiWorld& mpi, const ParallelMapping& map) {
    StageGroups g;
    const int s = map.stage();
    g.tp = mpi.split(map.tp_size() > 1 ? s : -1, map.tp_rank(), fmt::format("the tp group of stage {}", s));
    // Boundary b joins stages b and b + 1. A rank sits on boundaries s - 1 and s, one even and one
    // odd, so two splits (even boundaries, then odd) give every rank both of its groups.
    for (int parity : {0, 1}) {
        int b = -1;
        if (s % 2 == parity && !map.last_stage()) b = s;
        if (s >= 1 && (s - 1) % 2 == parity) b = s - 1;
        auto c = mpi.split(b, mpi.rank(), fmt::format("the hand-over group of stages {} and {}", b, b + 1));
        if (b == s) g.to_next = std::move(c);
        if (b >= 0 && b == s - 1) g.from_prev = std::move(c);
    }
    return g;
}

}  // namespace tps
