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

bool same_kind(const PlanRequest& r, int a, int b) {
    const auto& ba = r.bands[static_cast<size_t>(a)];
    const auto& bb = r.bands[static_cast<size_t>(b)];
    return r.devices[static_cast<size_t>(a)].same_card(r.devices[static_cast<size_t>(b)]) &&
           ba.min_bytes == bb.min_bytes && ba.max_bytes == bb.max_bytes;
}

// Groups of interchangeable cards (same profile and same band), in order of first appearance.
std::vector<std::vector<int>> card_kinds(const PlanRequest& r) {
    std::vector<std::vector<int>> groups;
    for (int i = 0; i < static_cast<int>(r.devices.size()); ++i) {
        auto it = std::find_if(groups.begin(), groups.end(),
                               [&](const std::vector<int>& g) { return same_kind(r, g.front(), i); });
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
    const auto cpus = std::count_if(r.devices.begin(), r.devices.end(),
                                    [](const DeviceProfile& d) { return d.kind == DeviceKind::cpu; });
    TPS_CHECK_AS(UsageError, cpus == 0 || cpus == static_cast<long>(r.devices.size()),
                 "--gpus: cpu devices and GPUs cannot share one plan (their activations live in different "
                 "memories); plan either the GPUs or the cpu ranks");
    if (!r.stage_tp.empty()) {
        int64_t used = 0;
        for (int tp : r.stage_tp) {
            used += tp;
            if (const auto why = tp_incompatibility(r.model, tp)) throw UsageError(fmt::format("--stages: {}", *why));
        }
        TPS_CHECK_AS(UsageError, used == static_cast<int64_t>(r.devices.size()),
                     "--stages: the stages hold {} ranks but {} devices were given", used, r.devices.size());
    }
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
    for (const auto& shape : enumerate_shapes(r)) {
        ShapeFit fit = fit_shape(r, shape);
        Scored s;
        s.feasible = fit.feasible;
        s.reason = fit.reason;
        s.load_ratio = fit.load_ratio;
        s.plan = std::move(fit.plan);
        out.push_back(std::move(s));
    }
    const Objective o = r.serving.objective;
    // A strict order: feasible first, by the objective, then the other objective, then the
    // name; infeasible ones by how far they overflow.
    std::stable_sort(out.begin(), out.end(), [o](const Scored& a, const Scored& b) {
        if (a.feasible != b.feasible) return a.feasible;
        if (!a.feasible) return a.load_ratio < b.load_ratio;
        const double ma = metric(a.plan, o), mb = metric(b.plan, o);
        if (ma != mb) return ma > mb;
        const double sa = secondary(a.plan, o), sb = secondary(b.plan, o);
        if (sa != sb) return sa > sb;
        return a.plan.shape < b.plan.shape;
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

std::vector<std::vector<StageShape>> enumerate_shapes(const PlanRequest& r) {
    const auto kinds = card_kinds(r);
    const size_t n_cards = r.devices.size();
    std::vector<std::vector<std::vector<int>>> orders;
    std::vector<size_t> idx(kinds.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    if (kinds.size() <= kMaxPermutedKinds && (kinds.size() == 1 || n_cards <= kMaxPermutedCards)) {
        do {
            std::vector<std::vector<int>> o;
            for (size_t i : idx) o.push_back(kinds[i]);
            orders.push_back(o);
        } while (std::next_permutation(idx.begin(), idx.end()));
    } else {
        orders.push_back(kinds);
        auto by_memory = kinds;
        std::stable_sort(by_memory.begin(), by_memory.end(), [&](const auto& a, const auto& b) {
            return r.bands[static_cast<size_t>(a.front())].max_bytes > r.bands[static_cast<size_t>(b.front())].max_bytes;
        });
        if (by_memory != kinds) orders.push_back(by_memory);
    }
    std::vector<int> kind_of(n_cards);
    for (size_t k = 0; k < kinds.size(); ++k) {
        for (int d : kinds[k]) kind_of[static_cast<size_t>(d)] = static_cast<int>(k);
    }

    const int n = static_cast<int>(n_cards);
    std::vector<bool> tp_ok(n_cards + 1);
    for (int t = 1; t <= n; ++t) tp_ok[static_cast<size_t>(t)] = !tp_incompatibility(r.model, t).has_value();

    std::vector<std::vector<StageShape>> shapes;
    std::set<std::vector<std::vector<int>>> seen;  // per stage, the sorted kinds of its cards
    for (const auto& order : orders) {
        std::vector<int> seq;
        for (const auto& g : order) seq.insert(seq.end(), g.begin(), g.end());
        // Compositions of n: bit i set = a stage boundary after position i.
        for (uint32_t mask = 0; mask < (1u << (n - 1)); ++mask) {
            std::vector<StageShape> shape(1);
            for (int i = 0; i < n; ++i) {
                shape.back().devices.push_back(seq[static_cast<size_t>(i)]);
                if (i + 1 < n && (mask >> i & 1u)) shape.emplace_back();
            }
            bool ok = true;
            std::vector<std::vector<int>> key;
            for (const auto& st : shape) {
                ok = ok && tp_ok[st.devices.size()];
                std::vector<int> k;
                for (int d : st.devices) k.push_back(kind_of[static_cast<size_t>(d)]);
                std::sort(k.begin(), k.end());
                key.push_back(k);
            }
            if (ok && !r.stage_tp.empty()) {
                ok = shape.size() == r.stage_tp.size();
                for (size_t s = 0; ok && s < shape.size(); ++s) {
                    ok = static_cast<int>(shape[s].devices.size()) == r.stage_tp[s];
                }
            }
            if (ok && seen.insert(key).second) shapes.push_back(std::move(shape));
        }
    }
    return shapes;
}

PlanRequest request_for_devices(const ModelDesc& model, std::vector<DeviceProfile> devices, const ServingShape& serving) {
    PlanRequest r;
    r.model = model;
    r.devices = std::move(devices);
    for (const auto& d : r.devices) r.bands.push_back(Band{0, d.memory_bytes});
    r.link = link_for_devices(r.devices, std::nullopt, std::nullopt);
    r.serving = resolve_serving(model, serving);
    return r;
}

std::vector<int> parse_stage_tp(std::string_view text) {
    std::vector<int> out;
    for (const auto& item : split(text, ',')) {
        const auto v = parse_int(trim(item));
        TPS_CHECK_AS(UsageError, v && *v >= 1 && *v <= static_cast<int64_t>(kMaxPlannedDevices),
                     "--stages: '{}' is not a tensor-parallel degree (1..{}); e.g. --stages 2,1", trim(item),
                     kMaxPlannedDevices);
        out.push_back(static_cast<int>(*v));
    }
    TPS_CHECK_AS(UsageError, !out.empty(), "--stages: no stages given (e.g. 2,1)");
    return out;
}

std::string shape_name(const PlanRequest& r, const std::vector<StageShape>& stages) {
    const auto kinds = card_kinds(r);
    const size_t tp0 = stages.front().devices.size();
    bool uniform = true;
    for (const auto& s : stages) uniform = uniform && s.devices.size() == tp0;
    if (kinds.size() == 1 && uniform) {
        if (stages.size() == 1) return fmt::format("tp{}", tp0);
        if (tp0 == 1) return fmt::format("pp{}", stages.size());
        return fmt::format("tp{}xpp{}", tp0, stages.size());
    }
    // Cards are named by their catalog name, or by name#index where two kinds share a name
    // (same card with other bands, or custom cards with other numbers).
    auto label = [&](int d) {
        const auto& name = r.devices[static_cast<size_t>(d)].name;
        for (int o = 0; o < static_cast<int>(r.devices.size()); ++o) {
            if (r.devices[static_cast<size_t>(o)].name == name && !same_kind(r, o, d)) return fmt::format("{}#{}", name, d);
        }
        return name;
    };
    std::string out = stages.size() == 1 ? std::string() : fmt::format("pp{}[", stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
        if (s > 0) out += " | ";
        out += fmt::format("tp{}", stages[s].devices.size());
        if (kinds.size() > 1) {
            // "2xrtx5090", "rtx5090+rtx4090"
            std::map<std::string, int> count;
            std::vector<std::string> order;
            for (int d : stages[s].devices) {
                const std::string l = label(d);
                if (count[l]++ == 0) order.push_back(l);
            }
            std::string cards;
            for (const auto& l : order) {
                if (!cards.empty()) cards += "+";
                cards += count[l] > 1 ? fmt::format("{}x{}", count[l], l) : l;
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
