#include "step_graphs.h"

#include "cuda_check.h"

namespace tps::cuda {

StepGraphs::StepGraphs(cudaStream_t stream, ScratchPool& pool, bool enabled)
    : stream_(stream), pool_(pool), enabled_(enabled) {}

StepGraphs::~StepGraphs() {
    abandon();
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
    pool_.recording = false;
}

void StepGraphs::begin_recording() {
    drop(key_);
    pool_.recording = true;
    // relaxed: inputs are uploaded on another stream while this one records
    TPS_CHECK_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    mode_ = Mode::record;
}

void StepGraphs::start(uint64_t key) {
    abandon();
    pool_.retired.clear();
    if (key == 0 || !enabled_) return;
    // the previous step's kernels may still read the buffers this step's inputs go to
    TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
    key_ = key;
    const auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second.generation == pool_.generation) {
        mode_ = Mode::replay;
    } else {
        begin_recording();
    }
}

void StepGraphs::recheck() {
    if (mode_ != Mode::replay) return;
    if (graphs_.at(key_).generation != pool_.generation) begin_recording();
}

void StepGraphs::finish() {
    if (mode_ == Mode::eager) return;
    if (mode_ == Mode::record) {
        cudaGraph_t g = nullptr;
        const cudaError_t e = cudaStreamEndCapture(stream_, &g);
        mode_ = Mode::eager;
        pool_.recording = false;
        TPS_CHECK_CUDA(e);
        cudaGraphExec_t exec = nullptr;
        const cudaError_t made = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        TPS_CHECK_CUDA(made);
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
    }
    mode_ = Mode::eager;
    TPS_CHECK_CUDA(cudaGraphLaunch(graphs_.at(key_).exec, stream_));
}

}  // namespace tps::cuda
