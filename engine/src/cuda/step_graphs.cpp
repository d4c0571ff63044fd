// The recording and replay of decode steps (step_graphs.h).
#include "step_graphs.h"

#include "cuda_check.h"

#include "tpserve/common/error.h"

namespace tps::cuda {

StepGraphs::StepGraphs(cudaStream_t stream, ScratchPool& pool, bool enabled)
    : stream_(stream), pool_(pool), enabled_(enabled) {}

StepGraphs::~StepGraphs() {
    abandon();
    cudaStreamSynchronize(stream_);
    if (one_shot_) cudaGraphExecDestroy(one_shot_);
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
}

void StepGraphs::drop(uint64_t key) noexcept {
    const auto it = graphs_.find(key);
    if (it == graphs_.end()) return;
    cudaGraphExecDestroy(it->second.exec);
    graphs_.erase(it);
}

void StepGraphs::abandon() noexcept {
    if (mode_ == Mode::record) {
        cudaGraph_t g = nullptr;
        cudaStreamEndCapture(stream_, &g);  // fails if the capture was invalidated; either way it ends
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();
    }
    mode_ = Mode::eager;
    repeating_ = false;
    pool_.recording = false;
}

void StepGraphs::begin_recording() {
    drop(key_);
    recorded_from_ = pool_.generation;
    pool_.recording = true;
    // relaxed: inputs are uploaded on another stream while this one records
    TPS_CHECK_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    mode_ = Mode::record;
}

void StepGraphs::start(uint64_t key) {
    abandon();
    if (one_shot_ || !pool_.retired.empty()) {
        // the last step's graph ran (its output op waited for it): what only it used can go
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        if (one_shot_) cudaGraphExecDestroy(one_shot_);
        one_shot_ = nullptr;
        pool_.retired.clear();
    }
    // with graphs off too, so a step computes alike whether or not graphs record it
    repeating_ = key != 0;
    if (!repeating_ || !enabled_ || broken_.contains(key)) return;
    if (seen_.insert(key).second) return;  // first of its shape: eager
    key_ = key;
    const auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second.generation == pool_.generation) {
        mode_ = Mode::replay;  // inputs go in stream order before the graph's launch
    } else {
        // inputs are uploaded on another stream while this one records: the previous step's
        // kernels must be done with those buffers
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        begin_recording();
    }
}

void StepGraphs::recheck() {
    if (mode_ != Mode::replay) return;
    if (graphs_.at(key_).generation != pool_.generation) {
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));  // as in start: uploads now leave the stream
        begin_recording();
    }
}

void StepGraphs::finish() {
    repeating_ = false;  // the step ends with its output
    if (mode_ == Mode::eager) return;
    if (mode_ == Mode::replay) {
        mode_ = Mode::eager;
        const Graph& g = graphs_.at(key_);
        // a buffer the graph reads moved after this step's ops were skipped (only after a failed
        // allocation): refuse rather than run on freed memory; the next step records again
        if (g.generation != pool_.generation) {
            drop(key_);
            throw DeviceError("CUDA graph: a buffer of a replayed decode step moved during the step; the step was "
                              "not run (it is recorded again at the next one)");
        }
        TPS_CHECK_CUDA(cudaGraphLaunch(g.exec, stream_));
        return;
    }
    {
        cudaGraph_t g = nullptr;
        const cudaError_t e = cudaStreamEndCapture(stream_, &g);
        mode_ = Mode::eager;
        pool_.recording = false;
        if (e != cudaSuccess) broken_.insert(key_);  // this shape cannot be recorded: run it eagerly
        TPS_CHECK_CUDA(e);
        cudaGraphExec_t exec = nullptr;
        const cudaError_t made = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        if (made != cudaSuccess) broken_.insert(key_);
        TPS_CHECK_CUDA(made);
        if (pool_.generation != recorded_from_) {
            // a buffer grew while recording: the first kernels point at the old one, kept only
            // until the next step. Run this graph once; the next step records at full size.
            one_shot_ = exec;
            TPS_CHECK_CUDA(cudaGraphLaunch(exec, stream_));
            return;
        }
        // graphs recorded before a buffer moved point at freed memory: drop them
        for (auto it = graphs_.begin(); it != graphs_.end();) {
            if (it->second.generation != pool_.generation) {
                cudaGraphExecDestroy(it->second.exec);
                it = graphs_.erase(it);
            } else {
                ++it;
            }
        }
        graphs_[key_] = {exec, pool_.generation};
        TPS_CHECK_CUDA(cudaGraphLaunch(exec, stream_));
    }
}

}  // namespace tps::cuda
