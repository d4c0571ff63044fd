// The planner: enumerates every split of the cards into pipeline stages with a tensor-parallel
// degree per stage, gives each stage layers in proportion to its memory, rejects any shape that
// breaks a band, scores the rest with the cost model, and picks the best for the objective.
// When nothing fits it says what would (other formats, more cards).
#pragma once

#include "tpserve/partition/band.h"
#include "tpserve/partition/device.h"
#include "tpserve/partition/link.h"
#include "tpserve/partition/model.h"
#include "tpserve/partition/plan.h"

#include <optional>
#include <string>
#include <vector>

namespace tps {

inline constexpr int64_t kKvBlockTokens = 16;       // the paged KV cache's block
inline constexpr int64_t kDefaultMaxContext = 8192;  // when the model allows more and none is asked

struct PlanRequest {
    ModelDesc model;
    std::vector<DeviceProfile> devices;
    std::vector<Band> bands;  // one per device
    LinkProfile link;
    ServingShape serving;
    // Only shapes whose stages have these tensor-parallel degrees, in pipeline order (--stages
    // 2,1: two stages, the first TP=2). Empty: every shape.
    std::vector<int> stage_tp;
};

// A request with bands from nothing to each device's whole memory (the KV cache is sized for the
// serving shape, never grown to fill a band), the devices' own link and the serving shape
// resolved: what running on cpu ranks asks of the planner (tpserve generate, the benchmarks).
PlanRequest request_for_devices(const ModelDesc& model, std::vector<DeviceProfile> devices, const ServingShape& serving);

// "2,1" -> {2, 1}: the --stages flag; tps::UsageError naming the bad item.
std::vector<int> parse_stage_tp(std::string_view text);

// One stage of a candidate shape: its tp degree is the number of devices.
struct StageShape {
    std::vector<int> devices;  // indices into PlanRequest::devices
};

struct PlanResult {
    bool feasible = false;
    Plan plan;                             // the chosen plan (also when infeasible: model, devices, link)
    std::vector<Alternative> candidates;   // every shape scored, best first; infeasible ones last
    std::string why_infeasible;            // when !feasible: the closest shape's problem
    std::vector<std::string> suggestions;  // when !feasible: "int8 weights (...)", "6 x rtx5090 (...)"
};

// Throws tps::UsageError for requests that make no sense (no devices, bands not one per device,
// max_context beyond the model's, ...).
PlanResult make_plan(const PlanRequest& request);

// The model as a plan records it (hyper-parameters, fingerprint, format, bytes).
ModelSummary summarize_model(const ModelDesc& model);

// Fits one shape: layer ranges, KV tokens, per-rank bytes and the estimate (a complete Plan
// without alternatives); the reason when it cannot fit. `request.serving` must be resolved.
struct ShapeFit {
    bool feasible = false;
    std::string reason;
    double load_ratio = 1e300;  // the fullest rank's need over its room (> 1: does not fit)
    Plan plan;
};
ShapeFit fit_shape(const PlanRequest& request, const std::vector<StageShape>& stages);

// Every distinct shape the planner considers for these devices (see docs/planner.md, "Search").
// Cards with the same profile and band are interchangeable; every order of the kinds is tried
// when there are at most kMaxPermutedKinds kinds and (for more than one kind) at most
// kMaxPermutedCards cards, else the given order and largest band first. Stage sizes that
// tp_incompatibility() rejects for the model are left out.
std::vector<std::vector<StageShape>> enumerate_shapes(const PlanRequest& request);
inline constexpr size_t kMaxPermutedKinds = 4;
inline constexpr size_t kMaxPermutedCards = 12;

// "tp4", "pp4", "tp2xpp2", "pp2[tp2 | tp1]", with card names when the cards differ.
std::string shape_name(const PlanRequest& request, const std::vector<StageShape>& stages);

// The best feasible plan without alternatives or suggestions (serving resolved), or nullopt.
std::optional<Plan> best_feasible_plan(const PlanRequest& request);

// What would make an infeasible request fit (called by make_plan).
std::vector<std::string> suggest_fixes(const PlanRequest& request);

// The serving shape with its defaults resolved for this model; tps::UsageError when a value
// does not fit the model (--max-context beyond its context length, ...).
ServingShape resolve_serving(const ModelDesc& model, const ServingShape& serving);

inline constexpr size_t kMaxPlannedDevices = 16;

}  // namespace tps
