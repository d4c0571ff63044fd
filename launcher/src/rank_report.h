// What each rank tells rank 0 between steps (Driver::gather_reports): its time computing its
// part of steps, its time in collectives and hand-overs, and the bytes it holds. `serve` puts them
// in /metrics and /v1/plan; `bench` turns them into time in collectives and pipeline idle time.
#pragma once

#include "shard_setup.h"

#include "tpserve/comm/communicator.h"
#include "tpserve/engine/llama.h"
#include "tpserve/partition/plan.h"

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

namespace tps::cli {

struct RankReport {
    int rank = 0;
    int stage = 0;
    double step_seconds = 0;
    double collective_seconds = 0;
    MemoryBytes actual;
};

std::vector<uint8_t> encode_report(const RankReport& r);
RankReport decode_report(const std::vector<uint8_t>& bytes);
// This rank's figures now; `comms` are the communicators its steps use (null ones skipped).
RankReport own_report(const LlamaModel& model, int rank, int stage, std::span<const Communicator* const> comms);
// The same for a split model's rank: time in its stage's tensor-parallel group and hand-overs
// (not the world's messages to rank 0, which are waits for outputs outside the steps).
RankReport own_report(const Shard& shard);

}  // namespace tps::cli
