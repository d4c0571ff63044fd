// All rank arithmetic in one value class: which stage a rank serves, its tensor-parallel rank
// and group, its device, its layers, and who it exchanges activations with. Built from a Plan
// and the MPI world's size and rank, validated in the constructor (a plan for another world size
// is refused), pure C++ so every rank of small grids is tested without MPI.
#pragma once

#include "tpserve/partition/plan.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tps {

class ParallelMapping {
public:
    // Throws tps::InputError when the plan does not fit this world (size, rank).
    ParallelMapping(const Plan& plan, int world_size, int rank);

    int world_size() const noexcept { return world_size_; }
    int rank() const noexcept { return rank_; }
    int stage() const noexcept { return stage_; }
    int stages() const noexcept { return static_cast<int>(stage_ranks_.size()); }
    int tp_size() const noexcept { return static_cast<int>(stage_ranks_[static_cast<size_t>(stage_)].size()); }
    int tp_rank() const noexcept { return tp_rank_; }
    int device() const noexcept { return device_; }
    int64_t first_layer() const noexcept { return first_layer_; }
    int64_t last_layer() const noexcept { return last_layer_; }
    bool first_stage() const noexcept { return stage_ == 0; }
    bool last_stage() const noexcept { return stage_ + 1 == stages(); }

    // World ranks of a stage's tensor-parallel group, in tp-rank order.
    const std::vector<int>& stage_ranks(int stage) const { return stage_ranks_.at(static_cast<size_t>(stage)); }
    const std::vector<int>& tp_group() const { return stage_ranks(stage_); }

    // Hand-over between stages: rank j of stage s + 1 receives from rank (j mod tp_s) of stage s,
    // so the senders share the work when the next stage is wider. nullopt-like -1 when none.
    int receive_from() const noexcept;          // the previous stage's rank this rank receives from
    std::vector<int> send_to() const;           // the next stage's ranks this rank sends to

    // A world rank's rank in the hand-over group of stages b and b + 1 (their ranks in order).
    int handover_rank(int world_rank, int boundary) const { return world_rank - stage_ranks(boundary).front(); }

    // The rank that samples (tp rank 0 of the last stage) and the rank that drives steps (0).
    int sampler_rank() const noexcept { return stage_ranks_.back().front(); }
    static constexpr int driver_rank() noexcept { return 0; }

    std::string describe() const;  // "rank 2: stage 1 of 2, tp 0 of 2, layers 16-31, device 2"

private:
    int world_size_ = 0;
    int rank_ = 0;
    int stage_ = 0;
    int tp_rank_ = 0;
    int device_ = 0;
    int64_t first_layer_ = 0;
    int64_t last_layer_ = 0;
    std::vector<std::vector<int>> stage_ranks_;
};

}  // namespace tps
