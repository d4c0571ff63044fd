// The planner explains itself: the human-readable report `tpserve plan` prints — the chosen shape,
// a per-rank memory table against each card's band, the estimate and its terms, and every other
// shape with why it lost or could not fit; or, when nothing fits, what would.
#pragma once

#include "tpserve/partition/planner.h"

#include <string>

namespace tps {

// `max_alternatives`: rows of the alternatives table (the rest are counted, and all are in --json).
std::string format_plan_report(const PlanResult& result, size_t max_alternatives = 12);

}  // namespace tps
