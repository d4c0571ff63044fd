// What a rank holds beside what its plan predicted, by the planner's categories, for `--verbose`
// (and later `tpserve check` and /v1/plan).
#pragma once

#include "tpserve/comm/communicator.h"
#include "tpserve/engine/llama.h"
#include "tpserve/partition/plan.h"

#include <string>

namespace tps::cli {

// What the engine holds by the planner's categories (workspace counted with the activations;
// runtime: the cuBLAS workspace, 0 on the CPU).
MemoryBytes actual_memory(const LlamaModel& model);

// `title`: "rank 1: stage 0 of 2, tp 1 of 2, layers 0-1". `comm` may be null.
std::string memory_report(const std::string& title, const LlamaModel& model, const MemoryBytes* predicted,
                          const std::string& unpredicted_reason);

// Time in each kind of collective since start, and per step.
std::string comm_report(const Communicator& comm, int64_t steps);

}  // namespace tps::cli
