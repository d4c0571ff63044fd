#include "memory_report.h"

#include "tpserve/engine/memory.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

namespace tps::cli {
namespace {

// A field of /proc/self/status in bytes (VmHWM: the peak resident set), or -1.
int64_t proc_status_bytes(const std::string& field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) == 0) {
            std::istringstream v(line.substr(field.size() + 1));
            int64_t kib = -1;
            v >> kib;
            return kib < 0 ? -1 : kib * 1024;
        }
    }
    return -1;
}

}  // namespace

MemoryBytes actual_memory(const LlamaModel& model) {
    const MemoryTotals t = MemoryTracker::instance().totals();
    auto held = [&](MemoryTag tag) { return t.current[static_cast<size_t>(tag)]; };
    MemoryBytes b;
    b.weights = held(MemoryTag::weights) + model.weights().mapped_bytes();
    b.kv_cache = held(MemoryTag::kv_cache);
    b.activations = held(MemoryTag::activations) + held(MemoryTag::workspace);
    b.runtime = held(MemoryTag::runtime);
    return b;
}

std::string memory_report(const std::string& title, const LlamaModel& model, const MemoryBytes* predicted,
                          const std::string& unpredicted_reason) {
    const MemoryTotals t = MemoryTracker::instance().totals();
    auto held = [&](MemoryTag tag) { return t.current[static_cast<size_t>(tag)]; };
    const LlamaWeights& w = model.weights();
    std::string out = fmt::format("{}\n  memory (bytes)   engine holds   plan predicts\n", title);
    auto row = [&](const char* what, int64_t have, int64_t want) {
        std::string note;
        if (predicted) {
            note = have == want ? "  exact"
                                : fmt::format("  {:+.1f}%", want ? 100.0 * static_cast<double>(have - want) / static_cast<double>(want) : 100.0);
        }
        out += fmt::format("  {:<14} {:>12} {:>15}{}\n", what, have, predicted ? fmt::format("{}", want) : "-", note);
    };
    const MemoryBytes a = actual_memory(model);
    row("weights", a.weights, predicted ? predicted->weights : 0);
    row("kv_cache", a.kv_cache, predicted ? predicted->kv_cache : 0);
    row("activations", a.activations, predicted ? predicted->activations : 0);
    if (held(MemoryTag::workspace) > 0) {
        out += fmt::format("    (of which {} the step workspace)\n", held(MemoryTag::workspace));
    }
    if (a.runtime > 0 || (predicted && predicted->runtime > 0)) row("runtime", a.runtime, predicted ? predicted->runtime : 0);
    row("total", a.total(), predicted ? predicted->total() : 0);
    out += fmt::format("  (checkpoint bytes read: {}; {} of them used in place from the mapped file)\n",
                       w.checkpoint_bytes, w.mapped_bytes());
    if (const int64_t peak = proc_status_bytes("VmHWM"); peak >= 0) {
        out += fmt::format("  (peak resident memory of the process: {:.1f} MiB, the program and its libraries included)\n",
                           static_cast<double>(peak) / 1048576.0);
    }
    if (predicted && predicted->runtime > 0) {
        out += "  (runtime held: the cuBLAS workspace; the plan's also counts the CUDA context and NCCL's buffers, "
               "which are not our allocations)\n";
    }
    if (!predicted) out += fmt::format("  (planner: {})\n", unpredicted_reason);
    return out;
}

std::string comm_report(const Communicator& comm, int64_t steps) {
    const CommStats& s = comm.stats();
    std::string out = fmt::format("  {}: {:.3f} s in calls", comm.name(), s.total_seconds());
    if (steps > 0) out += fmt::format(" ({:.3f} ms per step over {} steps)", 1e3 * s.total_seconds() / static_cast<double>(steps), steps);
    for (size_t i = 0; i < kCommOps; ++i) {
        if (s.calls[i] == 0) continue;
        out += fmt::format("; {} {} x {:.3f} s", comm_op_name(static_cast<CommOp>(i)), s.calls[i], s.seconds[i]);
    }
    return out + "\n";
}

}  // namespace tps::cli
