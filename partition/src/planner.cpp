// The search: every split of the card list into pipeline stages (contiguous groups, each a
// tensor-parallel group), over the distinct orders of the card types, scored by the cost model.
#include "tpserve/partition/planner.h"

#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"
#include "tpserve/partition/cost_model.h"
#include "tpserve/partition/memory_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace tps {
namespace {

// Groups of identical cards, in order of first appearance.
std::vector<std::vector<int>> card_types(const std::vector<DeviceProfile>& devices) {
    std::vector<std::vector<int>> groups;
    for (int i = 0; i < static_cast<int>(devices.size()); ++i) {
        auto it = std::find_if(groups.begin(), groups.end(), [&](const std::vector<int>& g) {
            return devices[static_cast<size_t>(g.front())].same_card(devices[static_cast<size_t>(i)]);
        });
        if (it == groups.end()) {
            groups.push_back({i});
        } else {
            it->push_back(i);
        }
    }
    return groups;
}

double metric(const Plan& p, Objective o) {
    return o == Objective::latency ? p.estimate.decode_tps_batch1 : p.estimate.decode_tps_max_batch;
}

double secondary(const Plan& p, Objective o) {
    return o == Objective::latency ? p.estimate.decode_tps_max_batch : p.estimate.decode_tps_batch1;
}

// The cost model's terms of one step, summed over the stages a token passes through.
struct Terms {
    double busy = 0;  // reading weights / computing
    double allreduce = 0;
    int64_t allreduces = 0;
    double handover = 0;
};

Terms sum_terms(const std::vector<StageTime>& stages) {
    Terms t;
    for (const auto& s : stages) {
        t.busy += s.busy_s;
        t.allreduce += s.allreduce_s;
        t.allreduces += s.allreduces;
        t.handover += s.handover_s;
    }
    return t;
}

const StageTime& slowest(const std::vector<StageTime>& v) {
    return *std::max_element(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.total_s < b.total_s; });
}

// "43% slower (33.9 vs 59.3 tok/s at batch 1): per token 25.30 ms of weight reads vs 12.65 ms,
// 4.14 ms in 162 all-reduces vs 4.19 ms; 2 stages in series"
std::string why_lost(const Plan& alt, const Plan& best, Objective o) {
    const double a = metric(alt, o);
    const double b = metric(best, o);
    const bool latency = o == Objective::latency;
    if (a >= b * 0.995) {
        return fmt::format("ties at {:.1f} tok/s; loses at {} ({:.1f} vs {:.1f} tok/s)", a,
                           latency ? "max batch" : "batch 1", secondary(alt, o), secondary(best, o));
    }
    std::string s = fmt::format("{:.0f}% slower ({:.1f} vs {:.1f} tok/s at batch {})", 100.0 * (1.0 - a / b), a, b,
                                latency ? int64_t{1} : alt.estimate.max_batch);
    if (latency) {
        const Terms at = sum_terms(alt.estimate.batch1);
        const Terms bt = sum_terms(best.estimate.batch1);
        s += fmt::format(": per token {:.2f} ms of weight reads/compute vs {:.2f}", at.busy * 1e3, bt.busy * 1e3);
        s += fmt::format(", {:.2f} ms in {} all-reduces vs {:.2f}", at.allreduce * 1e3, at.allreduces, bt.allreduce * 1e3);
        if (alt.stages.size() > 1) s += fmt::format("; {} stages in series", alt.stages.size());
    } else {
        const auto& as = slowest(alt.estimate.max_batch_stages);
        const auto& bs = slowest(best.estimate.max_batch_stages);
        s += fmt::format(": slowest stage {:.2f} ms per step ({:.2f} ms all-reduces) vs {:.2f} ({:.2f})", as.total_s * 1e3,
                         as.allreduce_s * 1e3, bs.total_s * 1e3, bs.allreduce_s * 1e3);
        if (alt.estimate.micro_batches > 1) s += fmt::format(", {} micro-batches in flight", alt.estimate.micro_batches);
    }
    return s;
}

// Why the chosen shape beat the runner-up, in the cost model's terms.
std::string why_chosen(const Plan& best, const Plan* runner_up, Objective o) {
    if (!runner_up) return fmt::format("{} is the only shape that fits", best.shape);
    const bool latency = o == Objective::latency;
    std::string s = fmt::format("{} beats {} ({:.1f} vs {:.1f} tok/s at batch {})", best.shape, runner_up->shape,
                                metric(best, o), metric(*runner_up, o), latency ? int64_t{1} : best.estimate.max_batch);
    if (!latency) {
        // Throughput: how often every sequence gets its next token, and what bounds that.
        auto cycle = [](const Plan& p) { return static_cast<double>(p.estimate.max_batch) / p.estimate.decode_tps_max_batch; };
        auto shape = [](const Plan& p) {
            const auto& st = slowest(p.estimate.max_batch_stages);
            return fmt::format("{} micro-batch{} in flight, slowest stage {:.2f} ms of which {:.2f} ms all-reduces",
                               p.estimate.micro_batches, p.estimate.micro_batches > 1 ? "es" : "", st.total_s * 1e3,
                               st.allreduce_s * 1e3);
        };
        return s + fmt::format(": every sequence advances a token each {:.2f} ms ({}) vs {:.2f} ms ({})", cycle(best) * 1e3,
                               shape(best), cycle(*runner_up) * 1e3, shape(*runner_up));
    }
    const Terms b = sum_terms(best.estimate.batch1);
    const Terms r = sum_terms(runner_up->estimate.batch1);
    const double total = 1.0 / best.estimate.decode_tps_batch1;
    std::vector<std::string> parts;
    auto compare = [&](double mine, double theirs, const std::string& what) {
        if (std::abs(mine - theirs) < std::max(1e-4, 0.01 * total)) return;  // below 0.1 ms or 1%: noise
        parts.push_back(mine < theirs ? fmt::format("saves {:.2f} ms of {}", (theirs - mine) * 1e3, what)
                                      : fmt::format("pays {:.2f} ms more for {}", (mine - theirs) * 1e3, what));
    };
    compare(b.busy, r.busy, best.stages.size() < runner_up->stages.size()
                                ? "weight reads (fewer stages in series, more cards per layer)"
                                : "weight reads/compute");
    compare(b.allreduce, r.allreduce, fmt::format("all-reduces over {}", best.link.describe()));
    compare(b.handover, r.handover, "stage hand-overs");
    if (!parts.empty()) {
        s += ": per token it ";
        for (size_t i = 0; i < parts.size(); ++i) s += (i ? (i + 1 == parts.size() ? " and " : ", ") : "") + parts[i];
    }
    if (b.allreduces > 0) {
        s += fmt::format("; its {} all-reduces over {} cost {:.2f} ms per token ({:.0f}% of the step)", b.allreduces,
                         best.link.describe(), b.allreduce * 1e3, 100.0 * b.allreduce / total);
    }
    return s;
}

void validate_request(const PlanRequest& r) {
    TPS_CHECK_AS(UsageError, !r.devices.empty(), "--gpus: zero cards: give at least one device");
    TPS_CHECK_AS(UsageError, r.devices.size() <= kMaxPlannedDevices,
                 "--gpus: {} devices; the planner handles at most {}", r.devices.size(), kMaxPlannedDevices);
    TPS_CHECK_AS(UsageError, r.bands.size() == r.devices.size(), "--budget: {} bands for {} devices",
                 r.bands.size(), r.devices.size());
    for (size_t i = 0; i < r.bands.size(); ++i) {
        TPS_CHECK_AS(UsageError, r.bands[i].min_bytes <= r.bands[i].max_bytes,
                     "--budget: card {}: band min {} GiB is above max {} GiB", i, gib(r.bands[i].min_bytes),
                     gib(r.bands[i].max_bytes));
    }
}

struct Scored {
    Plan plan;
    bool feasible = false;
    std::string reason;
    double load_ratio = 1e300;
};

// Fits and scores every shape; feasible ones best first.
std::vector<Scored> score_all(const PlanRequest& r) {
    std::vector<Scored> out;
    for (const auto& shape : enumerate_shapes(r.devices, r.model)) {
        ShapeFit fit = fit_shape(r, shape);
        Scored s;
        s.feasible = fit.feasible;
        s.reason = fit.reason;
        s.load_ratio = fit.load_ratio;
        s.plan = std::move(fit.plan);
        s.plan.shape = shape_name(r.devices, shape);
        out.push_back(std::move(s));
    }
    const Objective o = r.serving.objective;
    std::stable_sort(out.begin(), out.end(), [o](const Scored& a, const Scored& b) {
        if (a.feasible != b.feasible) return a.feasible;
        if (!a.feasible) return a.load_ratio < b.load_ratio;
        const double ma = metric(a.plan, o), mb = metric(b.plan, o);
        if (std::abs(ma - mb) > 1e-9 * std::max(ma, mb)) return ma > mb;
        return secondary(a.plan, o) > secondary(b.plan, o);
    });
    return out;
}

}  // namespace

std::string_view objective_name(Objective o) noexcept {
    switch (o) {
        case Objective::latency: return "latency";
        case Objective::throughput: return "throughput";
    }
    return "?";
}

ServingShape resolve_serving(const ModelDesc& m, const ServingShape& in) {
    ServingShape s = in;
    TPS_CHECK_AS(UsageError, s.max_batch >= 1 && s.max_batch <= 65536, "--max-batch: {} must be 1..65536",
                 s.max_batch);
    TPS_CHECK_AS(UsageError, s.max_context >= 0, "--max-context: {} must be positive", s.max_context);
    if (s.max_context == 0) s.max_context = std::min(m.max_context, kDefaultMaxContext);
    TPS_CHECK_AS(UsageError, s.max_context <= m.max_context,
                 "--max-context: {} exceeds the model's context length {}", s.max_context, m.max_context);
    TPS_CHECK_AS(UsageError, s.max_context >= kKvBlockTokens, "--max-context: {} is below one KV block ({} tokens)",
                 s.max_context, kKvBlockTokens);
    TPS_CHECK_AS(UsageError, s.prefill_chunk >= 1 && s.prefill_chunk <= 1 << 20,
                 "--prefill-chunk: {} must be 1..1048576", s.prefill_chunk);
    TPS_CHECK_AS(UsageError, kv_element_bytes(s.kv_dtype).has_value(),
                 "--kv-dtype: {} is not a KV-cache type (bf16, f16, fp8, f32)", dtype_name(s.kv_dtype));
    TPS_CHECK_AS(UsageError, s.prompt_tokens >= 1, "--prompt-tokens: {} must be positive", s.prompt_tokens);
    s.prompt_tokens = std::min(s.prompt_tokens, s.max_context);
    return s;
}

std::vector<std::vector<StageShape>> enumerate_shapes(const std::vector<DeviceProfile>& devices,
                                                      const ModelDesc& model) {
    const auto groups = card_types(devices);
    std::vector<std::vector<std::vector<int>>> orders;
    std::vector<size_t> idx(groups.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    if (groups.size() <= 4) {
        do {
            std::vector<std::vector<int>> o;
            for (size_t i : idx) o.push_back(groups[i]);
            orders.push_back(o);
        } while (std::next_permutation(idx.begin(), idx.end()));
    } else {
        orders.push_back(groups);
        auto by_memory = groups;
        std::stable_sort(by_memory.begin(), by_memory.end(), [&](const auto& a, const auto& b) {
            return devices[static_cast<size_t>(a.front())].memory_bytes > devices[static_cast<size_t>(b.front())].memory_bytes;
        });
        orders.push_back(by_memory);
    }

    const int n = static_cast<int>(devices.size());
    std::vector<bool> tp_ok(static_cast<size_t>(n) + 1);
    for (int t = 1; t <= n; ++t) tp_ok[static_cast<size_t>(t)] = !tp_incompatibility(model, t).has_value();

    std::vector<std::vector<StageShape>> shapes;
    std::set<std::string> seen;
    for (const auto& order : orders) {
        std::vector<int> seq;
        for (const auto& g : order) seq.insert(seq.end(), g.begin(), g.end());
        // Compositions of n: bit i set = a stage boundary after position i.
        for (uint32_t mask = 0; mask < (1u << (n - 1)); ++mask) {
            std::vector<StageShape> shape(1);
            bool ok = true;
            for (int i = 0; i < n; ++i) {
                shape.back().devices.push_back(seq[static_cast<size_t>(i)]);
                if (i + 1 < n && (mask >> i & 1u)) shape.emplace_back();
            }
            std::string key;
            for (const auto& st : shape) {
                ok = ok && tp_ok[st.devices.size()];
                std::vector<std::string> names;
                for (int d : st.devices) names.push_back(devices[static_cast<size_t>(d)].name + "/" +
                                                         std::to_string(devices[static_cast<size_t>(d)].memory_bytes));
                std::sort(names.begin(), names.end());
                key += "|";
                for (const auto& nm : names) key += nm + ",";
            }
            if (ok && seen.insert(key).second) shapes.push_back(std::move(shape));
        }
    }
    return shapes;
}

std::string shape_name(const std::vector<DeviceProfile>& devices, const std::vector<StageShape>& stages) {
    bool same = true;
    for (const auto& d : devices) same = same && d.same_card(devices.front());
    const size_t tp0 = stages.front().devices.size();
    bool uniform = true;
    for (const auto& s : stages) uniform = uniform && s.devices.size() == tp0;
    if (same && uniform) {
        if (stages.size() == 1) return fmt::format("tp{}", tp0);
        if (tp0 == 1) return fmt::format("pp{}", stages.size());
        return fmt::format("tp{}xpp{}", tp0, stages.size());
    }
    std::string out = stages.size() == 1 ? std::string() : fmt::format("pp{}[", stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
        if (s > 0) out += " | ";
        out += fmt::format("tp{}", stages[s].devices.size());
        if (!same) {
            // "2xrtx5090", "rtx5090+rtx4090"
            std::map<std::string, int> count;
            std::vector<std::string> order;
            for (int d : stages[s].devices) {
                const auto& name = devices[static_cast<size_t>(d)].name;
                if (count[name]++ == 0) order.push_back(name);
            }
            std::string cards;
            for (const auto& name : order) {
                if (!cards.empty()) cards += "+";
                cards += count[name] > 1 ? fmt::format("{}x{}", count[name], name) : name;
            }
            out += " " + cards;
        }
    }
    return stages.size() == 1 ? out : out + "]";
}

std::optional<Plan> best_feasible_plan(const PlanRequest& request) {
    validate_request(request);
    PlanRequest r = request;
    r.serving = resolve_serving(r.model, r.serving);
    auto scored = score_all(r);
    if (scored.empty() || !scored.front().feasible) return std::nullopt;
    return std::move(scored.front().plan);
}

PlanResult make_plan(const PlanRequest& request) {
    validate_request(request);
    PlanRequest r = request;
    r.serving = resolve_serving(r.model, r.serving);

    PlanResult result;
    auto scored = score_all(r);
    // TP degrees the model cannot use, reported once each.
    for (int t = 2; t <= static_cast<int>(r.devices.size()); ++t) {
        if (auto why = tp_incompatibility(r.model, t)) {
            Alternative a;
            a.shape = fmt::format("any stage with tp{}", t);
            a.reason = *why;
            result.candidates.push_back(a);
        }
    }
    std::vector<Alternative> ranked;
    for (const auto& s : scored) {
        Alternative a;
        a.shape = s.plan.shape;
        a.feasible = s.feasible;
        a.reason = s.feasible ? "" : s.reason;
        if (s.feasible) {
            a.decode_tps_batch1 = s.plan.estimate.decode_tps_batch1;
            a.decode_tps_max_batch = s.plan.estimate.decode_tps_max_batch;
            a.prefill_s = s.plan.estimate.prefill_s;
            if (&s != &scored.front()) a.reason = why_lost(s.plan, scored.front().plan, r.serving.objective);
        }
        ranked.push_back(a);
    }
    result.candidates.insert(result.candidates.begin(), ranked.begin(), ranked.end());

    if (!scored.empty() && scored.front().feasible) {
        result.feasible = true;
        const Plan* runner_up = scored.size() > 1 && scored[1].feasible ? &scored[1].plan : nullptr;
        scored.front().plan.rationale = why_chosen(scored.front().plan, runner_up, r.serving.objective);
        result.plan = std::move(scored.front().plan);
        result.plan.alternatives.assign(result.candidates.begin() + 1, result.candidates.end());
        return result;
    }
    // Nothing fits: keep the model, cards and link for the report, name the closest shape's
    // problem, and say what would fit.
    Plan& p = result.plan;
    p.model = summarize_model(r.model);
    p.serving = r.serving;
    p.devices = r.devices;
    p.bands = r.bands;
    p.link = r.link;
    p.world_size = static_cast<int>(r.devices.size());
    p.notes = r.model.notes;
    p.alternatives = result.candidates;
    if (!scored.empty()) {
        result.why_infeasible = fmt::format("{}: {}", scored.front().plan.shape, scored.front().reason);
    } else {
        result.why_infeasible = result.candidates.empty() ? "no shape" : result.candidates.front().reason;
    }
    result.suggestions = suggest_fixes(r);
    return result;
}

}  // namespace tps
