// What would make an infeasible request fit, smallest change first: a smaller weight format,
// more cards of the largest kind in the list, or a shorter context.
#include "tpserve/common/strings.h"
#include "tpserve/common/check.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps {
namespace {

double linear_bits(const ModelDesc& m) {
    double bits = 0, elements = 0;
    for (const auto& layer : m.layer_tensors) {
        for (const auto& t : layer) {
            if (!t.linear) continue;
            const double e = static_cast<double>(t.out * t.in * t.experts);
            bits += e * bits_per_weight(t.dtype);
            elements += e;
        }
    }
    return elements > 0 ? bits / elements : 16;
}

std::string outcome(const Plan& p) {
    return fmt::format("{} fits, {:.1f} tok/s at batch 1", p.shape, p.estimate.decode_tps_batch1);
}

}  // namespace

std::vector<std::string> suggest_fixes(const PlanRequest& r) {
    std::vector<std::string> out;
    const std::string format = weight_format_summary(r.model);

    if (r.model.fixed_format.empty()) {
        const double bits = linear_bits(r.model);
        for (DType f : {DType::int8, DType::int4}) {
            if (bits_per_weight(f) >= bits - 0.5) continue;
            PlanRequest q = r;
            try {
                apply_weight_format(q.model, f);
            } catch (const UsageError&) {
                continue;  // rows do not split into this format's blocks
            }
            if (auto p = best_feasible_plan(q)) {
                out.push_back(fmt::format("{} weights ({} GiB in all; --format {}): {}", dtype_name(f),
                                          gib(p->model.weight_bytes, 1), dtype_name(f), outcome(*p)));
                break;
            }
        }
    }

    // More cards: copies of the largest card in the list, with its band.
    const auto biggest = std::max_element(r.devices.begin(), r.devices.end(), [](const auto& a, const auto& b) {
        return a.memory_bytes < b.memory_bytes;
    });
    const size_t k = static_cast<size_t>(biggest - r.devices.begin());
    const bool same = std::all_of(r.devices.begin(), r.devices.end(),
                                  [&](const DeviceProfile& d) { return d.same_card(*biggest); });
    // Bounded so the search stays quick: up to 16 cards of one kind, fewer when kinds mix (each
    // card count multiplies the shapes by the orders of the kinds).
    size_t kinds = 1;
    for (size_t i = 1; i < r.devices.size(); ++i) {
        bool seen = false;
        for (size_t j = 0; j < i; ++j) seen = seen || r.devices[i].same_card(r.devices[j]);
        kinds += seen ? 0 : 1;
    }
    const size_t limit = kinds == 1 ? kMaxPlannedDevices : kinds == 2 ? 12 : 8;
    for (size_t n = r.devices.size() + 1; n <= limit; ++n) {
        PlanRequest q = r;
        q.stage_tp.clear();  // a forced shape is for the cards given; more cards get the planner's choice
        while (q.devices.size() < n) {
            q.devices.push_back(*biggest);
            q.bands.push_back(r.bands[k]);
        }
        if (auto p = best_feasible_plan(q)) {
            const std::string cards = same ? fmt::format("{} x {}", n, biggest->name)
                                           : fmt::format("{} cards (add {} x {})", n, n - r.devices.size(), biggest->name);
            out.push_back(fmt::format("{} ({} GiB of {} weights): {}", cards, gib(p->model.weight_bytes, 1), format,
                                      outcome(*p)));
            break;
        }
    }

    // A shorter context, when one max-length sequence of KV is what does not fit.
    const int64_t ctx = r.serving.max_context;
    for (int64_t c = ctx / 2; c >= 1024; c /= 2) {
        PlanRequest q = r;
        q.serving.max_context = c;
        if (auto p = best_feasible_plan(q)) {
            out.push_back(fmt::format("--max-context {} (KV for {} tokens): {}", c, p->kv_tokens, outcome(*p)));
            break;
        }
    }
    return out;
}

}  // namespace tps
