// The Plan's JSON: a round trip keeps what later parts read, and broken plans are refused with a
// message naming the problem.
#include "tpserve/partition/plan_json.h"

#include "test_requests.h"
#include "tpserve/common/error.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tps {
namespace {

using nlohmann::json;

Plan tp2xpp2() {
    const PlanResult r = make_plan(test::request("llama-3.1-70b", "4xrtx5090", DType::int4));
    EXPECT_TRUE(r.feasible);
    return r.plan;
}

TEST(PlanJson, RoundTripKeepsTheContract) {
    const Plan p = tp2xpp2();
    const Plan back = plan_from_json(plan_to_json(p), "test");
    EXPECT_EQ(back.shape, p.shape);
    EXPECT_EQ(back.world_size, p.world_size);
    EXPECT_EQ(back.model.fingerprint, p.model.fingerprint);
    ASSERT_EQ(back.stages.size(), p.stages.size());
    for (size_t s = 0; s < p.stages.size(); ++s) {
        EXPECT_EQ(back.stages[s].first_layer, p.stages[s].first_layer);
        EXPECT_EQ(back.stages[s].last_layer, p.stages[s].last_layer);
        EXPECT_EQ(back.stages[s].ranks, p.stages[s].ranks);
        EXPECT_EQ(back.stages[s].kv_tokens, p.stages[s].kv_tokens);
    }
    ASSERT_EQ(back.per_rank.size(), p.per_rank.size());
    for (size_t r = 0; r < p.per_rank.size(); ++r) {
        EXPECT_EQ(back.per_rank[r].bytes.weights, p.per_rank[r].bytes.weights);
        EXPECT_EQ(back.per_rank[r].bytes.total(), p.per_rank[r].bytes.total());
        EXPECT_EQ(back.per_rank[r].vocab_last, p.per_rank[r].vocab_last);
        EXPECT_EQ(back.per_rank[r].band.max_bytes, p.per_rank[r].band.max_bytes);
    }
    EXPECT_EQ(back.serving.max_context, p.serving.max_context);
    EXPECT_DOUBLE_EQ(back.link.allreduce_alpha, p.link.allreduce_alpha);
    EXPECT_DOUBLE_EQ(back.estimate.decode_tps_batch1, p.estimate.decode_tps_batch1);
    EXPECT_EQ(plan_to_json(back)["per_rank"], plan_to_json(p)["per_rank"]);
}

void expect_refused(json j, const std::string& needle) {
    try {
        plan_from_json(j, "plan.json");
        FAIL() << "accepted";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("plan.json"), std::string::npos) << e.what();
    }
}

TEST(PlanJson, BrokenPlansAreRefused) {
    // a two-stage plan to break
    PlanRequest req = test::request("llama-3.1-8b", "4xrtx5090");
    req.serving = resolve_serving(req.model, req.serving);
    ShapeFit fit = fit_shape(req, {StageShape{{0, 1}}, StageShape{{2, 3}}});
    ASSERT_TRUE(fit.feasible) << fit.reason;
    const json good = plan_to_json(fit.plan);
    EXPECT_NO_THROW(plan_from_json(good, "plan.json"));

    json gap = good;
    gap["stages"][1]["layers"][0] = gap["stages"][1]["layers"][0].get<int>() + 1;
    expect_refused(gap, "a gap");
    json overlap = good;
    overlap["stages"][1]["layers"][0] = overlap["stages"][1]["layers"][0].get<int>() - 1;
    expect_refused(overlap, "an overlap");
    json world = good;
    world["world_size"] = 3;
    expect_refused(world, "world_size 3 but the stages hold 4 ranks");
    json dup = good;
    dup["stages"][1]["ranks"][0] = 0;
    expect_refused(dup, "rank 0 appears in more than one place");
    json tp = good;
    tp["stages"][0]["tp"] = 3;
    expect_refused(tp, "tp=3 but lists 2 ranks");
    json short_cover = good;
    short_cover["model"]["layers"] = 40;
    expect_refused(short_cover, "cover layers [0, 32) of 40");
    json device = good;
    device["stages"][0]["devices"][0] = 9;
    expect_refused(device, "device 9");
    json schema = good;
    schema["schema"] = "tpserve.plan/0";
    expect_refused(schema, "schema");
    json missing = good;
    missing["per_rank"][0].erase("bytes");
    expect_refused(missing, "per_rank[].bytes");
    json mistyped = good;
    mistyped["serving"]["max_batch"] = "32";
    expect_refused(mistyped, "serving.max_batch");
    json huge_tp = good;
    huge_tp["stages"][0]["tp"] = int64_t{1} << 32;  // must not wrap to 0 and divide by it
    expect_refused(huge_tp, "stages[].tp");
    json shared_device = good;
    shared_device["stages"][1]["devices"][0] = shared_device["stages"][0]["devices"][0];
    shared_device["per_rank"][2]["device"] = shared_device["stages"][0]["devices"][0];
    expect_refused(shared_device, "is given to two ranks");
    json over_band = good;
    over_band["per_rank"][1]["bytes"]["kv_cache"] = int64_t{40} << 30;
    expect_refused(over_band, "outside its band");
    json huge_bytes = good;
    huge_bytes["per_rank"][0]["bytes"]["weights"] = INT64_MAX;
    expect_refused(huge_bytes, "per_rank[].bytes.weights");
}

TEST(PlanJson, InfeasibleResultsAreNotPlans) {
    const PlanResult r = make_plan(test::request("llama-3.1-70b", "4xrtx5090"));
    ASSERT_FALSE(r.feasible);
    const json j = infeasible_to_json(r);
    EXPECT_FALSE(j["feasible"].get<bool>());
    EXPECT_FALSE(j["suggestions"].empty());
    expect_refused(j, "nothing fits");
}

TEST(PlanJson, APlanForAnotherModelIsRefused) {
    const Plan p = tp2xpp2();
    ModelDesc other = load_model("llama-2-70b");
    apply_weight_format(other, DType::int4);
    EXPECT_THROW(check_plan_matches_model(p, other, "plan.json"), InputError);
    ModelDesc same = load_model("llama-3.1-70b");
    apply_weight_format(same, DType::int4);
    EXPECT_NO_THROW(check_plan_matches_model(p, same, "plan.json"));
    ModelDesc other_format = load_model("llama-3.1-70b");
    apply_weight_format(other_format, DType::int8);
    EXPECT_THROW(check_plan_matches_model(p, other_format, "plan.json"), InputError);
}

TEST(PlanJson, FilesAndUnreadableFiles) {
    namespace fs = std::filesystem;
    const fs::path path = test::temp_path("tps-plan.json");
    std::ofstream(path) << plan_to_json(tp2xpp2()).dump(2);
    EXPECT_EQ(read_plan_file(path).world_size, 4);
    std::ofstream(path) << "{\"schema\": ";
    EXPECT_THROW(read_plan_file(path), InputError);
    fs::remove(path);
    EXPECT_THROW(read_plan_file(path), InputError);
}

}  // namespace
}  // namespace tps
