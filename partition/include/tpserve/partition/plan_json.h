// The Plan's JSON form (schema "tpserve.plan/1", documented in docs/planner.md and checked by
// docs/plan.schema.json). plan_from_json() validates what it reads: a plan with gaps or overlaps
// in its layer ranges, a world size that disagrees with its stages, or a rank listed twice is a
// tps::InputError naming the problem.
#pragma once

#include "tpserve/partition/plan.h"
#include "tpserve/partition/planner.h"

#include <nlohmann/json.hpp>

#include <filesystem>

namespace tps {

inline constexpr const char* kPlanSchema = "tpserve.plan/1";

nlohmann::json plan_to_json(const Plan& plan);
// The JSON of a request that nothing fits: the model, cards, every shape and why it failed, and
// the suggestions; "feasible": false.
nlohmann::json infeasible_to_json(const PlanResult& result);

Plan plan_from_json(const nlohmann::json& j, const std::string& origin);
Plan read_plan_file(const std::filesystem::path& path);

// Structural checks of a plan (also run by plan_from_json): layers [0, L) covered once in order,
// ranks 0..N-1 each once, tp sizes matching the stages' rank lists, devices in range.
void validate_plan(const Plan& plan, const std::string& origin);

// A plan made for another model is refused (fingerprints differ).
void check_plan_matches_model(const Plan& plan, const ModelDesc& model, const std::string& origin);

}  // namespace tps
