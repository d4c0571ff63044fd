#include "tpserve/comm/parallel_mapping.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/plan_json.h"

#include <fmt/format.h>

namespace tps {

ParallelMapping::ParallelMapping(const Plan& plan, int world_size, int rank) : world_size_(world_size), rank_(rank) {
    validate_plan(plan, "the plan");
    TPS_CHECK_AS(InputError, world_size == plan.world_size,
                 "the plan is for {} ranks but {} were started (mpirun -np {})", plan.world_size, world_size,
                 plan.world_size);
    TPS_CHECK_AS(InputError, rank >= 0 && rank < world_size, "rank {} is outside a world of {}", rank, world_size);
    // Ranks must be numbered stage by stage: rank 0 drives the first stage, and the hand-over
    // rules below assume stages in rank order.
    int expected = 0;
    for (const auto& st : plan.stages) {
        for (int r : st.ranks) {
            TPS_CHECK_AS(InputError, r == expected, "the plan's ranks must run 0..{} stage by stage; stage {} lists rank {}",
                         world_size - 1, st.index, r);
            ++expected;
        }
        stage_ranks_.push_back(st.ranks);
    }
    const RankPlan& me = plan.per_rank.at(static_cast<size_t>(rank));
    stage_ = me.stage;
    tp_rank_ = me.tp_rank;
    device_ = me.device;
    first_layer_ = me.first_layer;
    last_layer_ = me.last_layer;
}

int ParallelMapping::receive_from() const noexcept {
    if (first_stage()) return -1;
    const auto& prev = stage_ranks_[static_cast<size_t>(stage_ - 1)];
    return prev[static_cast<size_t>(tp_rank_) % prev.size()];
}

std::vector<int> ParallelMapping::send_to() const {
    std::vector<int> out;
    if (last_stage()) return out;
    const auto& next = stage_ranks_[static_cast<size_t>(stage_ + 1)];
    const auto width = static_cast<int>(tp_size());
    for (size_t j = 0; j < next.size(); ++j) {
        if (static_cast<int>(j) % width == tp_rank_) out.push_back(next[j]);
    }
    return out;
}

std::string ParallelMapping::describe() const {
    return fmt::format("rank {}: stage {} of {}, tp {} of {}, layers {}-{}, device {}", rank_, stage_, stages(), tp_rank_,
                       tp_size(), first_layer_, last_layer_ - 1, device_);
}

}  // namespace tps
