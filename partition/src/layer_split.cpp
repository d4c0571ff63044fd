// fit_shape(): one candidate shape -> layer ranges, KV capacity and per-rank bytes, or the reason
// it cannot fit. Layers go to stages in proportion to what each stage can hold: the contiguous
// split that minimises the largest (load / capacity) over the stages, found by bisection on that
// ratio with a greedy check (greedy is exact for contiguous splits with per-stage capacities).
#include "tpserve/common/check.h"
#include "tpserve/common/strings.h"
#include "tpserve/partition/cost_model.h"
#include "tpserve/partition/memory_model.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace tps {
namespace {

struct RankSlot {
    int rank = 0;
    int device = 0;
    int tp_rank = 0;
    int64_t fixed = 0;  // runtime + activations + non-layer weights
    MemoryBytes bytes;
};

struct StageWork {
    int tp = 1;
    bool first = false;
    bool last = false;
    std::vector<RankSlot> ranks;
    int64_t capacity = 0;         // min over ranks of band max - fixed: room for layers and KV
    std::vector<int64_t> layer_weights;  // per layer: weight bytes on one rank
    std::vector<int64_t> cost;           // per layer: weights + KV of one max-context sequence
    int64_t kv_token_layer = 0;   // KV bytes per token per layer on one rank
};

// Greedy: each stage takes as many layers as fit in ratio * capacity, leaving one per later stage.
bool greedy(const std::vector<StageWork>& st, int64_t layers, double ratio, std::vector<int64_t>* cuts) {
    int64_t next = 0;
    if (cuts) cuts->clear();
    for (size_t s = 0; s < st.size(); ++s) {
        const double budget = ratio * static_cast<double>(st[s].capacity);
        const int64_t later = static_cast<int64_t>(st.size() - s - 1);
        double load = 0;
        const int64_t start = next;
        while (next < layers - later) {
            const double c = static_cast<double>(st[s].cost[static_cast<size_t>(next)]);
            if (load + c > budget) break;
            load += c;
            ++next;
        }
        if (next == start) return false;  // not even one layer fits
        if (cuts) cuts->push_back(next);
    }
    return next == layers;
}

std::string device_label(const PlanRequest& r, int device) {
    return fmt::format("{} #{}", r.devices[static_cast<size_t>(device)].name, device);
}

}  // namespace

ModelSummary summarize_model(const ModelDesc& m) {
    ModelSummary s;
    s.name = m.name;
    s.source = m.source;
    s.architecture = m.architecture;
    s.fingerprint = model_fingerprint(m);
    s.layers = m.layers;
    s.hidden = m.hidden;
    s.intermediate = m.intermediate;
    s.heads = m.heads;
    s.kv_heads = m.kv_heads;
    s.head_dim = m.head_dim;
    s.vocab = m.vocab;
    s.experts = m.experts;
    s.experts_active = m.experts_active;
    s.tied_embeddings = m.tied_embeddings;
    s.weight_format = weight_format_summary(m);
    s.weight_bytes = total_weight_bytes(m);
    s.parameters = total_parameters(m);
    return s;
}

ShapeFit fit_shape(const PlanRequest& r, const std::vector<StageShape>& shape) {
    const ModelDesc& m = r.model;
    const ServingShape& sv = r.serving;
    ShapeFit fit;
    fit.plan.shape = shape_name(r, shape);
    const int64_t n_stages = static_cast<int64_t>(shape.size());
    if (n_stages > m.layers) {
        fit.reason = fmt::format("{} stages but the model has only {} layers", n_stages, m.layers);
        return fit;
    }
    int world = 0;
    for (const auto& s : shape) world += static_cast<int>(s.devices.size());

    // KV is allocated in whole blocks: one max-context sequence takes this many tokens of room.
    const int64_t sequence = (sv.max_context + kKvBlockTokens - 1) / kKvBlockTokens * kKvBlockTokens;
    std::vector<StageWork> st(shape.size());
    int rank = 0;
    for (size_t s = 0; s < shape.size(); ++s) {
        StageWork& w = st[s];
        w.tp = static_cast<int>(shape[s].devices.size());
        w.first = s == 0;
        w.last = s + 1 == shape.size();
        if (auto why = tp_incompatibility(m, w.tp)) {
            fit.reason = *why;
            return fit;
        }
        w.kv_token_layer = kv_bytes_per_token_layer(m, w.tp, sv.kv_dtype);
        w.capacity = INT64_MAX;
        for (int t = 0; t < w.tp; ++t) {
            RankSlot slot;
            slot.rank = rank++;
            slot.device = shape[s].devices[static_cast<size_t>(t)];
            slot.tp_rank = t;
            const DeviceProfile& d = r.devices[static_cast<size_t>(slot.device)];
            slot.bytes.runtime = runtime_bytes(d, r.link.kind, world > 1);
            slot.bytes.activations = activation_bytes(m, sv, w.tp, d.kind, w.last, world == 1);
            slot.bytes.weights = global_weight_bytes(m, w.first, w.last, w.tp, t);
            slot.fixed = slot.bytes.runtime + slot.bytes.activations + slot.bytes.weights;
            const Band& band = r.bands[static_cast<size_t>(slot.device)];
            if (slot.fixed >= band.max_bytes) {
                fit.reason = fmt::format("rank {} ({}): runtime {} + activations {} + embedding/head {} GiB alone "
                                         "exceed the band max {} GiB",
                                         slot.rank, device_label(r, slot.device), gib(slot.bytes.runtime),
                                         gib(slot.bytes.activations), gib(slot.bytes.weights), gib(band.max_bytes));
                return fit;
            }
            w.capacity = std::min(w.capacity, band.max_bytes - slot.fixed);
            w.ranks.push_back(slot);
        }
        // Layer tensors shard evenly (only vocabulary tensors, outside the layers, do not), so
        // tp rank 0 stands for every rank of the group.
        w.layer_weights.resize(static_cast<size_t>(m.layers));
        w.cost.resize(static_cast<size_t>(m.layers));
        for (int64_t l = 0; l < m.layers; ++l) {
            w.layer_weights[static_cast<size_t>(l)] = layer_weight_bytes(m, l, w.tp, 0);
            w.cost[static_cast<size_t>(l)] = w.layer_weights[static_cast<size_t>(l)] + sequence * w.kv_token_layer;
        }
    }

    // Smallest ratio of load to capacity that the greedy split achieves.
    double hi = 1.0;
    while (!greedy(st, m.layers, hi, nullptr)) {
        hi *= 2;
        TPS_CHECK(hi < 1e12, "layer split did not converge");
    }
    double lo = 0;
    for (int it = 0; it < 64; ++it) {
        const double mid = 0.5 * (lo + hi);
        (greedy(st, m.layers, mid, nullptr) ? hi : lo) = mid;
    }
    std::vector<int64_t> cuts;
    greedy(st, m.layers, hi, &cuts);
    fit.load_ratio = hi;
    if (hi > 1.0) {
        // Name the fullest rank of the best split and what it would need.
        size_t worst = 0;
        double worst_ratio = 0;
        int64_t begin = 0;
        int64_t worst_load = 0;
        for (size_t s = 0; s < st.size(); ++s) {
            int64_t load = 0;
            for (int64_t l = begin; l < cuts[s]; ++l) load += st[s].cost[static_cast<size_t>(l)];
            const double ratio = static_cast<double>(load) / static_cast<double>(st[s].capacity);
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                worst = s;
                worst_load = load;
            }
            begin = cuts[s];
        }
        // the rank with the least room sets the stage's capacity
        auto room = [&](const RankSlot& s) { return r.bands[static_cast<size_t>(s.device)].max_bytes - s.fixed; };
        const RankSlot& slot = *std::min_element(st[worst].ranks.begin(), st[worst].ranks.end(),
                                                 [&](const RankSlot& a, const RankSlot& b) { return room(a) < room(b); });
        const Band& band = r.bands[static_cast<size_t>(slot.device)];
        fit.reason = fmt::format("rank {} ({}) would need {} GiB (its layers' weights and KV for one {}-token "
                                 "sequence, plus {} GiB runtime, activations and embedding/head), over its "
                                 "band max {} GiB",
                                 slot.rank, device_label(r, slot.device), gib(worst_load + slot.fixed),
                                 sv.max_context, gib(slot.fixed), gib(band.max_bytes));
        return fit;
    }

    // KV capacity: as many tokens as the fullest rank of each stage allows, no more than the
    // serving shape can use, then more where a card would otherwise sit below its band.
    std::vector<int64_t> first_layer(st.size());
    std::vector<int64_t> stage_max(st.size());
    int64_t begin = 0;
    int64_t system = sv.max_batch * sequence;
    for (size_t s = 0; s < st.size(); ++s) {
        first_layer[s] = begin;
        const int64_t n_layers = cuts[s] - begin;
        int64_t cap = INT64_MAX;
        for (auto& slot : st[s].ranks) {
            for (int64_t l = begin; l < cuts[s]; ++l) slot.bytes.weights += st[s].layer_weights[static_cast<size_t>(l)];
            const Band& band = r.bands[static_cast<size_t>(slot.device)];
            const int64_t room = band.max_bytes - slot.bytes.runtime - slot.bytes.activations - slot.bytes.weights;
            cap = std::min(cap, room / (n_layers * st[s].kv_token_layer));
        }
        stage_max[s] = cap / kKvBlockTokens * kKvBlockTokens;
        system = std::min(system, stage_max[s]);
        begin = cuts[s];
    }
    if (system < sequence) {
        fit.reason = fmt::format("KV cache holds only {} tokens, less than one {}-token sequence", system,
                                 sv.max_context);
        return fit;
    }

    Plan& p = fit.plan;
    p.model = summarize_model(m);
    p.serving = sv;
    p.devices = r.devices;
    p.bands = r.bands;
    p.link = r.link;
    p.notes = m.notes;
    p.world_size = world;
    p.kv_tokens = system;
    for (size_t s = 0; s < st.size(); ++s) {
        const int64_t n_layers = cuts[s] - first_layer[s];
        const int64_t per_token = n_layers * st[s].kv_token_layer;
        int64_t tokens = system;
        for (const auto& slot : st[s].ranks) {
            const Band& band = r.bands[static_cast<size_t>(slot.device)];
            const int64_t held = slot.bytes.weights + slot.bytes.runtime + slot.bytes.activations;
            if (held + tokens * per_token < band.min_bytes) {
                const int64_t need = (band.min_bytes - held + per_token - 1) / per_token;
                tokens = std::max(tokens, (need + kKvBlockTokens - 1) / kKvBlockTokens * kKvBlockTokens);
            }
        }
        tokens = std::min(tokens, stage_max[s]);

        StagePlan sp;
        sp.index = static_cast<int>(s);
        sp.first_layer = first_layer[s];
        sp.last_layer = cuts[s];
        sp.tp = st[s].tp;
        sp.kv_heads_per_rank = kv_heads_per_rank(m, st[s].tp);
        sp.kv_replicated = m.kv_heads < st[s].tp;
        sp.kv_tokens = tokens;
        for (auto& slot : st[s].ranks) {
            slot.bytes.kv_cache = tokens * per_token;
            RankPlan rp;
            rp.rank = slot.rank;
            rp.stage = static_cast<int>(s);
            rp.tp_rank = slot.tp_rank;
            rp.device = slot.device;
            rp.device_name = r.devices[static_cast<size_t>(slot.device)].name;
            rp.first_layer = sp.first_layer;
            rp.last_layer = sp.last_layer;
            if (st[s].first || st[s].last) {
                std::tie(rp.vocab_first, rp.vocab_last) = vocab_slice(m.vocab, st[s].tp, slot.tp_rank);
            }
            rp.bytes = slot.bytes;
            rp.band = r.bands[static_cast<size_t>(slot.device)];
            if (!rp.band.contains(rp.bytes.total())) {
                // Below the floor: the stage's KV stopped growing at the rank with the least room.
                std::string why;
                if (rp.bytes.total() < rp.band.min_bytes) {
                    const RankSlot* limit = &st[s].ranks.front();
                    for (const auto& o : st[s].ranks) {
                        const auto left = [&](const RankSlot& x) {
                            return r.bands[static_cast<size_t>(x.device)].max_bytes - x.bytes.runtime -
                                   x.bytes.activations - x.bytes.weights;
                        };
                        if (left(o) < left(*limit)) limit = &o;
                    }
                    why = limit->rank != rp.rank
                              ? fmt::format(" (the KV cache of its stage is capped by rank {} ({}), which has less room)",
                                            limit->rank, device_label(r, limit->device))
                              : fmt::format(" (the KV cache grows in {}-token blocks and the next block would pass "
                                            "the band max)",
                                            kKvBlockTokens);
                }
                fit.reason = fmt::format("rank {} ({}) would hold {} GiB, outside its band {}-{} GiB{}", rp.rank,
                                         device_label(r, rp.device), gib(rp.bytes.total()), gib(rp.band.min_bytes),
                                         gib(rp.band.max_bytes), why);
                return fit;
            }
            sp.ranks.push_back(rp.rank);
            sp.devices.push_back(rp.device);
            p.per_rank.push_back(rp);
        }
        p.stages.push_back(sp);
    }
    estimate_plan(m, p);
    fit.feasible = true;
    return fit;
}

}  // namespace tps
