// The planner's results that the README shows, band edges, heterogeneous cards and bad input.
#include "tpserve/partition/planner.h"

#include "test_requests.h"
#include "tpserve/common/error.h"
#include "tpserve/common/strings.h"
#include "tpserve/partition/cost_model.h"
#include "tpserve/partition/memory_model.h"
#include "tpserve/partition/plan_json.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace tps {
namespace {

using test::request;

bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

void expect_inside_bands(const Plan& p) {
    for (const auto& r : p.per_rank) {
        EXPECT_TRUE(r.band.contains(r.bytes.total()))
            << p.shape << " rank " << r.rank << " holds " << r.bytes.total() << " outside [" << r.band.min_bytes
            << ", " << r.band.max_bytes << "]";
    }
    EXPECT_NO_THROW(validate_plan(p, p.shape));
}

const Alternative* find_candidate(const PlanResult& r, const std::string& shape) {
    for (const auto& a : r.candidates) {
        if (a.shape == shape) return &a;
    }
    return nullptr;
}

TEST(Planner, Llama70bBf16On4x5090DoesNotFitAndSaysWhatWould) {
    const PlanResult r = make_plan(request("llama-3.1-70b", "4xrtx5090"));
    ASSERT_FALSE(r.feasible);
    EXPECT_TRUE(contains(r.why_infeasible, "over its band max 24.00 GiB")) << r.why_infeasible;
    ASSERT_GE(r.suggestions.size(), 2u);
    EXPECT_TRUE(contains(r.suggestions[0], "int8 weights (67.7 GiB")) << r.suggestions[0];
    EXPECT_TRUE(contains(r.suggestions[1], "6 x rtx5090")) << r.suggestions[1];
    for (const auto& c : r.candidates) EXPECT_FALSE(c.feasible) << c.shape;
}

TEST(Planner, Llama70bInt8On4x5090FitsEveryCardInItsBand) {
    const PlanResult r = make_plan(request("llama-3.1-70b", "4xrtx5090", DType::int8));
    ASSERT_TRUE(r.feasible);
    const Plan& p = r.plan;
    expect_inside_bands(p);
    for (const auto& rank : p.per_rank) {
        EXPECT_GE(rank.bytes.total(), 20 * kGiB);
        EXPECT_LE(rank.bytes.total(), 24 * kGiB);
    }
    EXPECT_EQ(p.shape, "tp4");
    EXPECT_EQ(p.world_size, 4);
    // the rationale weighs the all-reduces over PCIe without P2P against the serial stages
    EXPECT_TRUE(contains(p.rationale, "all-reduces over PCIe 5.0 without P2P")) << p.rationale;
    EXPECT_TRUE(contains(p.rationale, "weight reads")) << p.rationale;
    const Alternative* pp4 = find_candidate(r, "pp4");
    ASSERT_NE(pp4, nullptr);
    EXPECT_TRUE(pp4->feasible);
    EXPECT_LT(pp4->decode_tps_batch1, p.estimate.decode_tps_batch1);
    EXPECT_TRUE(contains(pp4->reason, "slower")) << pp4->reason;
    EXPECT_TRUE(contains(pp4->reason, "4 stages in series")) << pp4->reason;
    const Alternative* tp3 = find_candidate(r, "any stage with tp3");
    ASSERT_NE(tp3, nullptr);
    EXPECT_EQ(tp3->reason, "tp=3 does not divide 64 attention heads");
}

TEST(Planner, Qwen32bOn3x5090NeedsAPipeline) {
    const PlanResult r = make_plan(request("qwen2.5-32b", "3xrtx5090"));
    ASSERT_TRUE(r.feasible);
    expect_inside_bands(r.plan);
    EXPECT_GT(r.plan.stages.size(), 1u);
    for (const auto& s : r.plan.stages) EXPECT_NE(s.tp, 3);
    const Alternative* tp3 = find_candidate(r, "any stage with tp3");
    ASSERT_NE(tp3, nullptr);
    EXPECT_EQ(tp3->reason, "tp=3 does not divide 40 attention heads");
}

// Mixtral plans on GPUs with no caveat: the CUDA backend computes expert layers.
TEST(Planner, AnMoEPlanOnGpusHasNoBackendCaveat) {
    const PlanResult moe = make_plan(request("mixtral-8x7b", "4xrtx5090", DType::int8));
    ASSERT_TRUE(moe.feasible) << moe.why_infeasible;
    for (const auto& n : moe.plan.notes) EXPECT_FALSE(contains(n, "CPU backend")) << n;
}

// A K-quant model plans on GPUs with no caveat: the CUDA kernels read every format the engine
// does (engine/src/cuda/kernel_format.h).
TEST(Planner, AKQuantPlanOnGpusHasNoFormatCaveat) {
    for (DType t : {DType::q4_k, DType::q6_k, DType::q5_0}) {
        const PlanResult kq = make_plan(request("llama-3.1-70b", "4xrtx5090", t));
        ASSERT_TRUE(kq.feasible) << kq.why_infeasible;
        for (const auto& n : kq.plan.notes) EXPECT_FALSE(contains(n, "CUDA")) << n;
    }
}

TEST(Planner, SmolLM2On2CpusIsPp2) {
    const PlanResult r = make_plan(request("smollm2-135m", "2xcpu"));
    ASSERT_TRUE(r.feasible);
    expect_inside_bands(r.plan);
    EXPECT_EQ(r.plan.shape, "pp2");
    ASSERT_EQ(r.plan.stages.size(), 2u);
    EXPECT_EQ(r.plan.stages[0].last_layer, 15);  // 30 layers, even cards: an even split
    const Alternative* tp2 = find_candidate(r, "any stage with tp2");
    ASSERT_NE(tp2, nullptr);
    EXPECT_EQ(tp2->reason, "tp=2 does not divide 9 attention heads");
}

TEST(Planner, TheSlowerCardGetsFewerLayersInsideItsOwnBand) {
    PlanRequest req = request("qwen2.5-32b", "rtx5090,rtx5090,rtx4090", DType::int8);
    const PlanResult r = make_plan(req);
    ASSERT_TRUE(r.feasible);
    expect_inside_bands(r.plan);
    for (const auto& rank : r.plan.per_rank) {
        if (rank.device_name == "rtx4090") {
            EXPECT_LE(rank.bytes.total(), 18 * kGiB);
            EXPECT_GE(rank.bytes.total(), 15 * kGiB);
        }
    }
    // Three pipeline stages, one card each: the 4090's stage holds fewer layers than each 5090's.
    req.serving = resolve_serving(req.model, req.serving);
    const ShapeFit fit = fit_shape(req, {StageShape{{0}}, StageShape{{1}}, StageShape{{2}}});
    ASSERT_TRUE(fit.feasible) << fit.reason;
    const auto layers = [&](int s) { return fit.plan.stages[static_cast<size_t>(s)].last_layer - fit.plan.stages[static_cast<size_t>(s)].first_layer; };
    EXPECT_LT(layers(2), layers(0));
    EXPECT_LT(layers(2), layers(1));
    EXPECT_EQ(layers(0) + layers(1) + layers(2), 64);
    expect_inside_bands(fit.plan);
}

TEST(Planner, MixedTensorParallelGroupsBreakTheBiggerCardsBand) {
    // tp2 over a 5090 and a 4090: equal shards, so the 5090 cannot reach its 20 GiB floor while
    // the 4090 stays under its 18 GiB ceiling.
    PlanRequest req = request("llama-3.1-8b", "rtx5090,rtx4090");
    req.serving = resolve_serving(req.model, req.serving);
    const ShapeFit fit = fit_shape(req, {StageShape{{0, 1}}});
    ASSERT_FALSE(fit.feasible);
    EXPECT_TRUE(contains(fit.reason, "outside its band")) << fit.reason;
    EXPECT_TRUE(contains(fit.reason, "rtx5090")) << fit.reason;
}

TEST(Planner, BandEdges) {
    // One custom card, tp1: the need is weights + runtime + activations + one max-context sequence.
    PlanRequest req = request("smollm2-135m", "card:8:1000:100");
    req.serving.max_context = 4096;
    req.serving.max_batch = 1;
    req.serving = resolve_serving(req.model, req.serving);
    const ModelDesc& m = req.model;
    int64_t need = global_weight_bytes(m, true, true, 1, 0) + runtime_bytes(req.devices[0], req.link.kind, false) +
                   activation_bytes(m, req.serving, 1, DeviceKind::gpu, true, true);
    for (int64_t l = 0; l < m.layers; ++l) need += layer_weight_bytes(m, l, 1, 0);
    need += 4096 * m.layers * kv_bytes_per_token_layer(m, 1, req.serving.kv_dtype);

    req.bands = {Band{0, need}};
    ShapeFit exact = fit_shape(req, {StageShape{{0}}});
    ASSERT_TRUE(exact.feasible) << exact.reason;
    EXPECT_EQ(exact.plan.per_rank[0].bytes.total(), need);  // lands on the edge, not past it
    EXPECT_EQ(exact.plan.kv_tokens, 4096);

    req.bands = {Band{0, need - 1}};
    const ShapeFit short_by_one = fit_shape(req, {StageShape{{0}}});
    EXPECT_FALSE(short_by_one.feasible);
    EXPECT_TRUE(contains(short_by_one.reason, "over its band max")) << short_by_one.reason;

    // A floor above what the serving shape needs: KV grows (in whole blocks) to reach it.
    req.bands = {Band{need + 100 * kMiB, need + 200 * kMiB}};
    const ShapeFit grown = fit_shape(req, {StageShape{{0}}});
    ASSERT_TRUE(grown.feasible) << grown.reason;
    EXPECT_GE(grown.plan.per_rank[0].bytes.total(), need + 100 * kMiB);
    EXPECT_EQ(grown.plan.kv_tokens % kKvBlockTokens, 0);

    // A band narrower than one KV block cannot be hit: reported, never violated.
    const int64_t block = kKvBlockTokens * m.layers * kv_bytes_per_token_layer(m, 1, req.serving.kv_dtype);
    req.bands = {Band{need + 1, need + block / 2}};
    const ShapeFit narrow = fit_shape(req, {StageShape{{0}}});
    EXPECT_FALSE(narrow.feasible);
    EXPECT_TRUE(contains(narrow.reason, "outside its band")) << narrow.reason;
}

TEST(Planner, NoPlanEverBreaksABand) {
    const std::vector<std::pair<std::string, std::optional<DType>>> models = {
        {"llama-3.1-8b", std::nullopt}, {"llama-3.1-70b", DType::int4}, {"llama-2-70b", DType::int8},
        {"qwen2.5-72b", DType::int4},   {"mixtral-8x7b", DType::int8},  {"smollm2-135m", std::nullopt}};
    const std::vector<std::string> boxes = {"2xrtx5090", "4xrtx5090", "rtx5090,rtx4090,rtx4090", "2xh100-sxm",
                                            "8xrtx3090", "l40s,a100-80g"};
    int feasible = 0;
    for (const auto& [model, format] : models) {
        for (const auto& box : boxes) {
            const PlanResult r = make_plan(request(model, box, format));
            if (!r.feasible) {
                EXPECT_FALSE(r.why_infeasible.empty());
                continue;
            }
            ++feasible;
            expect_inside_bands(r.plan);
            for (const auto& a : r.plan.alternatives) EXPECT_FALSE(a.reason.empty()) << model << " " << box << " " << a.shape;
            EXPECT_GT(r.plan.estimate.decode_tps_batch1, 0);
            EXPECT_GE(r.plan.estimate.decode_tps_max_batch, r.plan.estimate.decode_tps_batch1 * 0.99);
        }
    }
    EXPECT_GT(feasible, 20);
}

TEST(Planner, MoeDecodeReadsOnlyTheActiveExperts) {
    const PlanResult r = make_plan(request("mixtral-8x7b", "2xh100-sxm"));
    ASSERT_TRUE(r.feasible);
    const Plan& p = r.plan;
    // at batch 1, two of eight experts are read: far less than the rank's weights
    const double bw = p.devices[0].bandwidth * p.estimate.bandwidth_efficiency;
    double read = 0;
    for (const auto& s : p.estimate.batch1) read += s.memory_s * bw;
    EXPECT_LT(read, 0.4 * static_cast<double>(p.per_rank[0].bytes.weights));
    // at batch 32 nearly every expert is touched
    double read32 = 0;
    for (const auto& s : p.estimate.max_batch_stages) read32 += s.memory_s * bw;
    EXPECT_GT(read32, 2.0 * read);
}

// On CPUs a quantized decode step costs expanding its weights (docs/planner.md, the constants):
// compute-bound where the bytes alone would say memory-bound. Prefill is costed as before.
TEST(Planner, CpuDecodeOfQuantizedWeightsCostsTheirExpansion) {
    const std::string cpu = "cpu:64:50:0.25";  // 50 GB/s, 0.25 TFLOPS
    auto batch1 = [](const Plan& p) {
        StageTime sum;
        for (const auto& s : p.estimate.batch1) {
            sum.compute_s += s.compute_s;
            sum.memory_s += s.memory_s;
        }
        return sum;
    };
    const PlanResult f16 = make_plan(request("llama-3.1-8b", cpu, DType::f16));
    const PlanResult q8 = make_plan(request("llama-3.1-8b", cpu, DType::q8_0));
    const PlanResult k4 = make_plan(request("llama-3.1-8b", cpu, DType::q4_k));
    ASSERT_TRUE(f16.feasible && q8.feasible && k4.feasible);
    const StageTime a = batch1(f16.plan), b = batch1(q8.plan), c = batch1(k4.plan);
    EXPECT_GT(a.memory_s, a.compute_s);  // f16: bound by its bytes
    EXPECT_GT(b.compute_s, b.memory_s);  // q8_0: by expanding them
    // the layers' weights cost q8_0's 4.1 and q4_k's 7.1 FLOPs more each, at half the 0.25 TFLOPS
    // (the LM head keeps the checkpoint's bf16 under --format: the same in all three)
    double weights = 0;
    for (const auto& layer : load_model("llama-3.1-8b").layer_tensors) {
        for (const auto& t : layer) weights += t.in > 1 ? static_cast<double>(t.out * t.in) : 0.0;
    }
    const double flops = 0.25e12 * 0.5;
    EXPECT_NEAR((b.compute_s - a.compute_s) * flops, 4.1 * weights, 1e-6 * weights);
    EXPECT_NEAR((c.compute_s - a.compute_s) * flops, 7.1 * weights, 1e-6 * weights);
    EXPECT_LT(k4.plan.estimate.decode_tps_batch1, q8.plan.estimate.decode_tps_batch1);
    // on GPUs nothing changes: the CUDA kernels are judged by bytes and FLOPs alone
    const PlanResult g8 = make_plan(request("llama-3.1-8b", "rtx5090", DType::q8_0));
    const PlanResult g16 = make_plan(request("llama-3.1-8b", "rtx5090", DType::f16));
    ASSERT_TRUE(g8.feasible && g16.feasible);
    EXPECT_NEAR(batch1(g8.plan).compute_s, batch1(g16.plan).compute_s, 1e-9);
    // a prompt of more than 12 tokens expands each row once (engine/src/cpu/matmul.cpp)
    EXPECT_NEAR((q8.plan.estimate.prefill[0].compute_s - f16.plan.estimate.prefill[0].compute_s) * flops, 4.1 * weights,
                1e-6 * weights);
    // 5 to 12 tokens: once per 6-token tile (7 pays two); past 12 once again, as the engine does
    const ModelDesc k4_model = request("llama-3.1-8b", cpu, DType::q4_k).model;
    auto step = [&](int64_t batch) { return estimate_workload(k4_model, k4.plan, batch, 128, 128).time_per_token_s; };
    EXPECT_LT(step(4), step(5));
    EXPECT_LT(step(6) * 1.2, step(7));
    EXPECT_GT(step(12), step(13));
}

TEST(Planner, ThroughputObjectiveRanksByMaxBatch) {
    PlanRequest req = request("llama-3.1-70b", "4xrtx5090", DType::int8);
    req.serving.objective = Objective::throughput;
    const PlanResult r = make_plan(req);
    ASSERT_TRUE(r.feasible);
    for (const auto& a : r.plan.alternatives) {
        if (a.feasible) {
            EXPECT_LE(a.decode_tps_max_batch, r.plan.estimate.decode_tps_max_batch);
        }
    }
    EXPECT_TRUE(contains(r.plan.rationale, "every sequence advances a token each")) << r.plan.rationale;
}

TEST(Planner, CardsWithDifferentBandsAreReordered) {
    // The small-band card cannot hold the embedding stage's share but can hold the last one's:
    // only one order fits, whichever order --gpus gives.
    for (const char* budget : {"20:24,2:6", "2:6,20:24"}) {
        PlanRequest req = request("llama-3.1-8b", "2xrtx5090", std::nullopt, budget);
        req.serving.max_batch = 4096;
        const PlanResult r = make_plan(req);
        EXPECT_TRUE(r.feasible) << budget << ": " << r.why_infeasible;
        if (r.feasible) expect_inside_bands(r.plan);
    }
}

TEST(Planner, TheCardThatLimitsAStageIsTheOneNamed) {
    PlanRequest req = request("qwen2.5-32b", "rtx5090,rtx4090");
    req.serving = resolve_serving(req.model, req.serving);
    const ShapeFit fit = fit_shape(req, {StageShape{{0, 1}}});
    ASSERT_FALSE(fit.feasible);
    EXPECT_TRUE(contains(fit.reason, "rtx4090 #1")) << fit.reason;
}

TEST(Planner, KvCapacityIsWholeBlocks) {
    PlanRequest req = request("smollm2-135m", "cpu:8:50:1");
    req.serving.max_context = 1000;  // 62.5 blocks: a sequence needs 63
    req.serving.max_batch = 1;
    const PlanResult r = make_plan(req);
    ASSERT_TRUE(r.feasible);
    EXPECT_EQ(r.plan.kv_tokens % kKvBlockTokens, 0);
    EXPECT_GE(r.plan.kv_tokens, 1008);
    for (const auto& s : r.plan.stages) EXPECT_EQ(s.kv_tokens % kKvBlockTokens, 0);
}

TEST(Planner, BadRequestsAreUsageErrors) {
    PlanRequest req = request("llama-3.1-8b", "2xrtx5090");
    PlanRequest none = req;
    none.devices.clear();
    none.bands.clear();
    EXPECT_THROW(make_plan(none), UsageError);
    PlanRequest bands = req;
    bands.bands.pop_back();
    EXPECT_THROW(make_plan(bands), UsageError);
    PlanRequest inverted = req;
    inverted.bands[0] = Band{24 * kGiB, 20 * kGiB};
    EXPECT_THROW(make_plan(inverted), UsageError);
    PlanRequest ctx = req;
    ctx.serving.max_context = 200000;  // the model allows 131072
    EXPECT_THROW(make_plan(ctx), UsageError);
    PlanRequest batch = req;
    batch.serving.max_batch = 0;
    EXPECT_THROW(make_plan(batch), UsageError);
    PlanRequest kv = req;
    kv.serving.kv_dtype = DType::q4_0;
    EXPECT_THROW(make_plan(kv), UsageError);
    PlanRequest many = request("llama-3.1-8b", "17xrtx5090");
    EXPECT_THROW(make_plan(many), UsageError);
    PlanRequest mixed = request("llama-3.1-8b", "rtx5090,cpu:64:100:2");
    EXPECT_THROW(make_plan(mixed), UsageError);
}

TEST(Planner, ShapesAndNames) {
    const PlanRequest four = request("llama-3.1-70b", "4xrtx5090");
    const auto shapes = enumerate_shapes(four);
    // compositions of 4 into parts from {1, 2, 4} (3 does not divide 64 heads)
    EXPECT_EQ(shapes.size(), 6u);
    EXPECT_EQ(shape_name(four, {StageShape{{0, 1, 2, 3}}}), "tp4");
    EXPECT_EQ(shape_name(four, {StageShape{{0}}, StageShape{{1}}, StageShape{{2}}, StageShape{{3}}}), "pp4");
    EXPECT_EQ(shape_name(four, {StageShape{{0, 1}}, StageShape{{2, 3}}}), "tp2xpp2");
    EXPECT_EQ(shape_name(four, {StageShape{{0, 1}}, StageShape{{2}}, StageShape{{3}}}), "pp3[tp2 | tp1 | tp1]");
    const PlanRequest mixed = request("llama-3.1-70b", "rtx5090,rtx5090,rtx4090");
    EXPECT_EQ(shape_name(mixed, {StageShape{{0, 1}}, StageShape{{2}}}), "pp2[tp2 2xrtx5090 | tp1 rtx4090]");
    // the same card with two bands: the name tells them apart
    const PlanRequest bands = request("llama-3.1-8b", "2xrtx5090", std::nullopt, "20:24,2:6");
    EXPECT_EQ(shape_name(bands, {StageShape{{1}}, StageShape{{0}}}), "pp2[tp1 rtx5090#1 | tp1 rtx5090#0]");
    EXPECT_EQ(enumerate_shapes(bands).size(), 3u);  // tp2, and pp2 in both orders
    // orders of the card types are tried: the 4090 may come first or last
    const auto mixed_shapes = enumerate_shapes(mixed);
    bool first = false, last = false;
    for (const auto& s : mixed_shapes) {
        first |= s.front().devices == std::vector<int>{2};
        last |= s.back().devices == std::vector<int>{2};
    }
    EXPECT_TRUE(first && last);
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

// A forced shape that does not fit is infeasible with its reason; the "more cards would fit"
// suggestion plans those cards freely rather than failing on the forced shape's device count.
TEST(Planner, AForcedShapeThatDoesNotFitIsInfeasibleNotAnError) {
    PlanRequest req = test::request("qwen2.5-32b", "2xrtx5090");
    req.stage_tp = {2};
    const PlanResult r = make_plan(req);
    EXPECT_FALSE(r.feasible);
    EXPECT_NE(r.why_infeasible.find("over its band"), std::string::npos) << r.why_infeasible;
}

}  // namespace
}  // namespace tps
