// ParallelMapping over every rank of small grids: each rank's stage, tp rank, layers, and the
// hand-over pairs (every rank of a stage receives from exactly one rank of the previous one, and
// every sender's list is exactly those that receive from it).
#include "tpserve/comm/parallel_mapping.h"

#include "tpserve/common/error.h"
#include "tpserve/partition/band.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/model_source.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace tps {
namespace {

Plan plan_for(const std::vector<std::vector<int>>& stages, const std::string& model = "llama-3.1-8b") {
    PlanRequest r;
    r.model = load_model(model);
    int n = 0;
    for (const auto& s : stages) n += static_cast<int>(s.size());
    r.devices = parse_device_list(fmt::format("{}xh100-sxm", n));
    r.bands = parse_budget("", r.devices);
    r.link = link_for_devices(r.devices, std::nullopt, std::nullopt);
    r.serving = resolve_serving(r.model, r.serving);
    std::vector<StageShape> shape;
    for (const auto& s : stages) shape.push_back(StageShape{s});
    ShapeFit fit = fit_shape(r, shape);
    EXPECT_TRUE(fit.feasible) << fit.reason;
    return fit.plan;
}

class Grids : public ::testing::TestWithParam<std::vector<std::vector<int>>> {};

TEST_P(Grids, EveryRankKnowsItsPlaceAndItsPeers) {
    const Plan plan = plan_for(GetParam());
    const int world = plan.world_size;
    int64_t covered = 0;
    std::vector<int> received(static_cast<size_t>(world), 0);
    for (int r = 0; r < world; ++r) {
        const ParallelMapping m(plan, world, r);
        const RankPlan& rp = plan.per_rank[static_cast<size_t>(r)];
        EXPECT_EQ(m.stage(), rp.stage);
        EXPECT_EQ(m.tp_rank(), rp.tp_rank);
        EXPECT_EQ(m.device(), rp.device);
        EXPECT_EQ(m.first_layer(), rp.first_layer);
        EXPECT_EQ(m.tp_group()[static_cast<size_t>(m.tp_rank())], r);
        EXPECT_EQ(m.first_stage(), rp.stage == 0);
        EXPECT_EQ(m.sampler_rank(), plan.stages.back().ranks.front());
        if (m.tp_rank() == 0) covered += m.last_layer() - m.first_layer();
        for (int to : m.send_to()) {
            const ParallelMapping peer(plan, world, to);
            EXPECT_EQ(peer.stage(), m.stage() + 1);
            EXPECT_EQ(peer.receive_from(), r);
            ++received[static_cast<size_t>(to)];
        }
        if (m.first_stage()) {
            EXPECT_EQ(m.receive_from(), -1);
        }
        if (m.last_stage()) {
            EXPECT_TRUE(m.send_to().empty());
        }
    }
    EXPECT_EQ(covered, plan.model.layers);
    for (int r = 0; r < world; ++r) {
        const ParallelMapping m(plan, world, r);
        EXPECT_EQ(received[static_cast<size_t>(r)], m.first_stage() ? 0 : 1) << "rank " << r;
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Grids,
                         ::testing::Values(std::vector<std::vector<int>>{{0}}, std::vector<std::vector<int>>{{0, 1}},
                                           std::vector<std::vector<int>>{{0}, {1}},
                                           std::vector<std::vector<int>>{{0, 1}, {2, 3}},
                                           std::vector<std::vector<int>>{{0}, {1}, {2}},
                                           std::vector<std::vector<int>>{{0, 1}, {2}},
                                           std::vector<std::vector<int>>{{0}, {1, 2, 3, 4}},
                                           std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5}, {6}}));

TEST(ParallelMapping, RefusesAPlanForAnotherWorld) {
    const Plan plan = plan_for({{0, 1}, {2, 3}});
    try {
        ParallelMapping(plan, 2, 0);
        FAIL();
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("the plan is for 4 ranks but 2 were started"), std::string::npos) << e.what();
    }
    EXPECT_THROW(ParallelMapping(plan, 4, 4), InputError);
    Plan shuffled = plan;
    std::swap(shuffled.stages[0].ranks, shuffled.stages[1].ranks);
    EXPECT_THROW(ParallelMapping(shuffled, 4, 0), InputError);
}

TEST(ParallelMapping, DescribesItself) {
    const ParallelMapping m(plan_for({{0, 1}, {2}}), 3, 2);
    EXPECT_EQ(m.describe().rfind("rank 2: stage 1 of 2, tp 0 of 1, layers ", 0), 0u) << m.describe();
}

}  // namespace
}  // namespace tps
