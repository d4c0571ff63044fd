// CUDA graphs for steps that repeat in shape (decode): the first step of a shape is recorded as a
// graph while it runs, later ones replay it with one launch instead of ~15 per layer. The
// backend's ops consult mode(): recording and eager steps launch their kernels (recording
// captures them), replayed ones only upload their inputs to the buffers the graph reads. A graph
// whose buffers moved since it was recorded (ScratchPool::generation) is recorded again.
#pragma once

#include "device_memory.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <unordered_map>
#include <unordered_set>

namespace tps::cuda {

class StepGraphs {
public:
    enum class Mode { eager, record, replay };

    StepGraphs(cudaStream_t stream, ScratchPool& pool, bool enabled);
    ~StepGraphs();
    StepGraphs(const StepGraphs&) = delete;
    StepGraphs& operator=(const StepGraphs&) = delete;

    // A step begins: key 0, or a key seen for the first time, runs eagerly; a current graph for
    // `key` is replayed; else recording starts (after waiting for the stream: inputs are then
    // uploaded outside it).
    void start(uint64_t key);
    // After the step's inputs are uploaded: if a buffer the graph reads moved, record instead of
    // replaying (only before any op was skipped).
    void recheck();
    Mode mode() const noexcept { return mode_; }
    // The step has a shape that is (or, with graphs on, will be) recorded: its ops choose their
    // launches as a recording would, so its eager first step launches the same kernels, and
    // with graphs off (TPS_CUDA_GRAPHS=0) it launches what a replay would run (the same kernels
    // with the same attention split).
    bool repeating() const noexcept { return repeating_; }
    bool launching() const noexcept { return mode_ != Mode::replay; }
    // The step's output is next: a recording ends and becomes the key's graph; the graph is
    // launched on the stream. Back to eager.
    void finish();
    // Ends a recording a failed step left open, discarding it.
    void abandon() noexcept;
    bool enabled() const noexcept { return enabled_; }

private:
    struct Graph {
        cudaGraphExec_t exec = nullptr;
        uint64_t generation = 0;
    };
    void begin_recording();
    void drop(uint64_t key) noexcept;

    cudaStream_t stream_;
    ScratchPool& pool_;
    bool enabled_;
    Mode mode_ = Mode::eager;
    bool repeating_ = false;
    uint64_t key_ = 0;
    uint64_t recorded_from_ = 0;  // the pool's generation when the recording began
    std::unordered_map<uint64_t, Graph> graphs_;
    // a graph launched once and not kept (a buffer grew while it recorded, so its first kernels
    // point at memory that goes at the next step): destroyed at the next start
    cudaGraphExec_t one_shot_ = nullptr;
    std::unordered_set<uint64_t> broken_;  // shapes whose recording failed: run eagerly
    // shapes seen once: the first step of a shape runs eagerly, so every kernel it uses is loaded
    // (lazy module loading) before a recording, and one-off shapes are never recorded
    std::unordered_set<uint64_t> seen_;
};

}  // namespace tps::cuda
