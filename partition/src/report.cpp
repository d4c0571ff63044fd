#include "tpserve/partition/report.h"

#include "tpserve/common/strings.h"

#include <fmt/format.h>

#include <map>

namespace tps {
namespace {

std::string cards_line(const Plan& p) {
    // "4 x rtx5090 (32 GiB, 1792 GB/s, 209.5 TFLOPS)" or a list for mixed cards
    std::vector<std::pair<const DeviceProfile*, int>> groups;
    for (const auto& d : p.devices) {
        if (!groups.empty() && groups.back().first->same_card(d)) {
            ++groups.back().second;
        } else {
            groups.emplace_back(&d, 1);
        }
    }
    std::string out;
    for (const auto& [d, n] : groups) {
        if (!out.empty()) out += ", ";
        out += fmt::format("{} x {} ({} GiB, {:.0f} GB/s, {:.1f} TFLOPS{})", n, d->name, gib(d->memory_bytes, 1),
                           d->bandwidth / 1e9, d->flops / 1e12, d->measured ? ", measured" : "");
    }
    return out;
}

std::string bands_line(const Plan& p) {
    std::string out;
    bool same = true;
    for (const auto& b : p.bands) same = same && b.min_bytes == p.bands[0].min_bytes && b.max_bytes == p.bands[0].max_bytes;
    if (same) return fmt::format("{}-{} GiB per card", gib(p.bands[0].min_bytes), gib(p.bands[0].max_bytes));
    for (size_t i = 0; i < p.bands.size(); ++i) {
        out += fmt::format("{}{} #{} {}-{}", i ? ", " : "", p.devices[i].name, i, gib(p.bands[i].min_bytes),
                           gib(p.bands[i].max_bytes));
    }
    return out + " GiB";
}

void header(std::string& out, const Plan& p) {
    const ModelSummary& m = p.model;
    out += fmt::format("model    {} ({}: {} layers, hidden {}, {} heads / {} KV heads, head dim {}, vocab {}{})\n",
                       m.name, m.architecture, m.layers, m.hidden, m.heads, m.kv_heads, m.head_dim, m.vocab,
                       m.experts ? fmt::format(", {} experts, {} active", m.experts, m.experts_active) : "");
    out += fmt::format("weights  {}: {} GiB, {:.2f} B parameters{}\n", m.weight_format, gib(m.weight_bytes),
                       static_cast<double>(m.parameters) / 1e9, m.tied_embeddings ? ", tied embeddings" : "");
    out += fmt::format("serving  max batch {}, max context {}, KV cache {}, prefill chunk {}, objective {}\n",
                       p.serving.max_batch, p.serving.max_context, dtype_name(p.serving.kv_dtype),
                       p.serving.prefill_chunk,
                       p.serving.objective == Objective::latency ? "latency (batch-1 decode)"
                                                                 : "throughput (max-batch decode)");
    out += fmt::format("cards    {}; band {}\n", cards_line(p), bands_line(p));
    out += fmt::format("link     {}: all-reduce {:.0f} us + bytes / {:.0f} GB/s, hand-over {:.0f} us + bytes / {:.0f} GB/s\n",
                       p.link.describe(), p.link.allreduce_alpha * 1e6, p.link.allreduce_beta / 1e9,
                       p.link.send_alpha * 1e6, p.link.send_beta / 1e9);
}

void alternatives(std::string& out, const std::vector<Alternative>& alts, size_t max_rows) {
    if (alts.empty()) return;
    out += "\nother shapes, best first:\n";
    out += fmt::format("  {:<34} {:>9} {:>10} {:>9}  {}\n", "shape", "batch-1", "max-batch", "prefill", "why not");
    size_t shown = 0;
    for (const auto& a : alts) {
        if (shown++ == max_rows) {
            out += fmt::format("  ... {} more (all in --json)\n", alts.size() - max_rows);
            break;
        }
        if (a.feasible) {
            out += fmt::format("  {:<34} {:>9.1f} {:>10.1f} {:>8.2f}s  {}\n", a.shape, a.decode_tps_batch1,
                               a.decode_tps_max_batch, a.prefill_s, a.reason);
        } else {
            out += fmt::format("  {:<34} {:>9} {:>10} {:>9}  infeasible: {}\n", a.shape, "-", "-", "-", a.reason);
        }
    }
}

std::string layer_range(int64_t first, int64_t last) {
    return last - first == 1 ? fmt::format("{}", first) : fmt::format("{}-{}", first, last - 1);
}

}  // namespace

std::string format_plan_report(const PlanResult& r, size_t max_rows) {
    const Plan& p = r.plan;
    std::string out;
    header(out, p);
    if (!r.feasible) {
        out += fmt::format("\nnothing fits: {} ({} GiB of {} weights) on these cards inside {}\n", p.model.name,
                           gib(p.model.weight_bytes), p.model.weight_format, bands_line(p));
        out += fmt::format("closest: {}\n", r.why_infeasible);
        if (r.suggestions.empty()) {
            out += "nothing tried fits either (other formats, up to 16 cards, shorter contexts)\n";
        } else {
            out += "it would fit with:\n";
            for (const auto& s : r.suggestions) out += fmt::format("  - {}\n", s);
        }
        alternatives(out, r.candidates, max_rows);
        for (const auto& n : p.notes) out += fmt::format("note: {}\n", n);
        return out;
    }

    const Estimate& e = p.estimate;
    out += fmt::format("\nplan     {}: {} stage{}, {} rank{}\n", p.shape, p.stages.size(), p.stages.size() > 1 ? "s" : "",
                       p.world_size, p.world_size > 1 ? "s" : "");
    out += fmt::format("\n{:>4} {:>5} {:>7} {:>5}  {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}  {}\n", "rank", "stage",
                       "layers", "tp", "device", "weights", "kv", "act", "runtime", "total", "band (GiB)");
    for (const auto& rp : p.per_rank) {
        const StagePlan& st = p.stages[static_cast<size_t>(rp.stage)];
        out += fmt::format("{:>4} {:>5} {:>7} {:>5}  {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}  {}-{} {}\n", rp.rank,
                           rp.stage, layer_range(rp.first_layer, rp.last_layer), fmt::format("{}/{}", rp.tp_rank, st.tp),
                           fmt::format("{} #{}", rp.device_name, rp.device), gib(rp.bytes.weights),
                           gib(rp.bytes.kv_cache), gib(rp.bytes.activations), gib(rp.bytes.runtime),
                           gib(rp.bytes.total()), gib(rp.band.min_bytes), gib(rp.band.max_bytes),
                           rp.band.contains(rp.bytes.total()) ? "ok" : "OUTSIDE");
    }
    for (const auto& st : p.stages) {
        if (st.kv_replicated) {
            out += fmt::format("stage {}: {} KV heads over tp={}: each rank holds 1 KV head, replicated on {} ranks\n",
                               st.index, p.model.kv_heads, st.tp, st.tp / p.model.kv_heads);
        }
    }
    out += fmt::format("\nKV cache {} tokens ({:.1f} sequences of {}), {}-token blocks", p.kv_tokens,
                       static_cast<double>(p.kv_tokens) / static_cast<double>(p.serving.max_context),
                       p.serving.max_context, kKvBlockTokens);
    if (p.stages.size() > 1) {
        out += "; per stage:";
        for (const auto& st : p.stages) out += fmt::format(" {}", st.kv_tokens);
    }
    out += "\n";
    double busy = 0, ar = 0, ho = 0;
    int64_t n_ar = 0;
    for (const auto& t : e.batch1) {
        busy += t.busy_s;
        ar += t.allreduce_s;
        n_ar += t.allreduces;
        ho += t.handover_s;
    }
    out += fmt::format("estimate decode {:.1f} tok/s at batch 1 ({:.2f} ms/token: weights/compute {:.2f} ms", e.decode_tps_batch1,
                       1e3 / e.decode_tps_batch1, busy * 1e3);
    if (n_ar) out += fmt::format(", {} all-reduces {:.2f} ms", n_ar, ar * 1e3);
    if (ho > 0) out += fmt::format(", hand-overs {:.2f} ms", ho * 1e3);
    out += ")\n";
    out += fmt::format("         decode {:.1f} tok/s at batch {}{}\n", e.decode_tps_max_batch, e.max_batch,
                       e.micro_batches > 1 ? fmt::format(" ({} micro-batches in flight)", e.micro_batches) : "");
    out += fmt::format("         prefill of {} tokens {:.3f} s; context {} tokens; {:.0f}% of bandwidth, {:.0f}% of compute "
                       "assumed reachable\n",
                       e.prompt_tokens, e.prefill_s, e.context_tokens, e.bandwidth_efficiency * 100,
                       e.compute_efficiency * 100);
    out += fmt::format("why      {}\n", p.rationale);
    alternatives(out, p.alternatives, max_rows);
    for (const auto& n : p.notes) out += fmt::format("note: {}\n", n);
    return out;
}

}  // namespace tps
