#include "tpserve/partition/cost_model.h"

#include "tpserve/partition/memory_model.h"

#include <algorithm>
#include <cmath>

namespace tps {
namespace {

// What one rank of a stage reads and computes for one layer.
struct LayerWork {
    double weight_bytes = 0;
    double flops_per_token = 0;  // linear layers only
    double expand_flops = 0;     // CPU: expanding the quantized weights to f32, as often as the step does (cpu_expansions)
};

// CPU devices: what expanding one stored weight to f32 in registers costs, in FLOPs of the
// effective compute rate, on top of its 2 FLOPs per token. The CPU backend's quantized matmuls are
// bound by this, not by memory (docs/perf.md): measured with `engine_bench --wide` (2026-11-29,
// 2 threads of an AMD EPYC: weights per second at batch-1 decode against the FMA peak, c = peak /
// rate, then e = c * 0.5 - 2 for the CPU's compute efficiency of 0.5). Plain formats expand for
// free next to their memory traffic (f16, bf16, f32, and int8 at 105% of the read bandwidth). Formats
// the engine does not compute with on CPUs (fp8, int4, the other i-quants) are costed as stored
// bytes only.
double expand_flops_per_weight(DType t) {
    switch (t) {
        case DType::q8_0: return 4.1;
        case DType::q4_0: return 4.2;
        case DType::q4_1: return 5.4;
        case DType::q5_0: case DType::q5_1: case DType::q2_k: return 6.3;
        case DType::q3_k: return 8.9;
        case DType::q4_k: case DType::q6_k: return 7.1;
        case DType::q5_k: return 8.3;
        // not measured (engine_bench makes random weights by quantizing, and the engine has no
        // i-quant quantizer): assumed as the formats they decode like, q4_0 and q4_k
        case DType::iq4_nl: return 4.2;
        case DType::iq4_xs: return 7.1;
        default: return 0;
    }
}

// How often the CPU matmul expands each weight for a step of `tokens` tokens through a matrix, as
// engine/src/cpu/matmul.cpp does: once for up to 4 (each row streamed once for all of them), once
// per register tile of 6 up to 12, and once past 12 (each row expanded into f32 for every tile).
// (In a long prefill the one expansion is lost in its FMAs: measured, a 128-token prefill runs at
// 0.61-0.67 of the FMA peak in every GGML format, docs/perf.md.)
double cpu_expansions(int64_t tokens) {
    if (tokens <= 4 || tokens > 12) return 1.0;
    return static_cast<double>((tokens + 5) / 6);
}

// Expected share of a layer's experts that `tokens` tokens touch when each picks k of E.
double experts_touched(const ModelDesc& m, int64_t tokens) {
    if (m.experts == 0) return 1;
    const double miss = 1.0 - static_cast<double>(m.experts_active) / static_cast<double>(m.experts);
    return 1.0 - std::pow(miss, static_cast<double>(tokens));
}

LayerWork layer_work(const ModelDesc& m, int64_t layer, int tp, int64_t tokens) {
    LayerWork w;
    for (const auto& t : m.layer_tensors[static_cast<size_t>(layer)]) {
        const double bytes = static_cast<double>(shard_bytes(m, t, tp, 0));
        double elements = static_cast<double>(t.out * t.in);
        switch (t.role) {
            case TensorRole::column: case TensorRole::row: elements /= tp; break;
            case TensorRole::kv_column:
                elements = elements / static_cast<double>(m.kv_heads) * static_cast<double>(kv_heads_per_rank(m, tp));
                break;
            case TensorRole::vocab: case TensorRole::replicated: break;
        }
        if (t.expert) {
            // only the experts the tokens are routed to are read; each token computes k of E
            // (a merged tensor holds all E; a per-expert tensor is used by a token with p = k/E)
            w.weight_bytes += bytes * experts_touched(m, tokens);
            // each touched expert runs on its share of the tokens, k of E: expanded that often
            const double share = static_cast<double>(tokens) * static_cast<double>(m.experts_active) /
                                 static_cast<double>(m.experts);
            w.expand_flops += elements * expand_flops_per_weight(t.dtype) * experts_touched(m, tokens) *
                              cpu_expansions(std::max<int64_t>(1, static_cast<int64_t>(std::ceil(share))));
            const double k = static_cast<double>(m.experts_active);
            w.flops_per_token += 2.0 * elements * (t.experts > 1 ? k : k / static_cast<double>(m.experts));
        } else {
            w.weight_bytes += bytes;
            w.flops_per_token += t.in > 1 ? 2.0 * elements : 0.0;
            w.expand_flops += t.in > 1 ? elements * expand_flops_per_weight(t.dtype) * cpu_expansions(tokens) : 0.0;
        }
    }
    return w;
}

struct StageView {
    const StagePlan* stage;
    double bandwidth;  // effective, of the slowest card in the group
    double flops;
    bool first;
    bool last;
    bool cpu = false;  // CPU devices: quantized weights cost their expansion (expand_flops_per_weight)
};

// One step of `tokens` new tokens per sequence-batch through one stage. `decode`: one new token per
// sequence attending to `context` cached ones; otherwise a prompt of `tokens` tokens (causal).
StageTime stage_time(const ModelDesc& m, const Plan& p, const StageView& v, int64_t tokens, int64_t context,
                     bool decode) {
    const int tp = v.stage->tp;
    const double act = static_cast<double>(kActivationBytes);
    const double heads = static_cast<double>(m.heads / tp);
    const double hd = static_cast<double>(m.head_dim);
    const double kv_token_layer = static_cast<double>(kv_bytes_per_token_layer(m, tp, p.serving.kv_dtype));
    const double n = static_cast<double>(tokens);
    const double ar_bytes = n * static_cast<double>(m.hidden) * act;
    StageTime t;
    auto add = [&](double bytes, double flops) {
        const double mem = bytes / v.bandwidth;
        const double comp = flops / v.flops;
        t.memory_s += mem;
        t.compute_s += comp;
        t.busy_s += std::max(mem, comp);
    };
    for (int64_t l = v.stage->first_layer; l < v.stage->last_layer; ++l) {
        const LayerWork w = layer_work(m, l, tp, tokens);
        double bytes = w.weight_bytes;
        double flops = w.flops_per_token * n + (v.cpu ? w.expand_flops : 0.0);
        if (decode) {
            bytes += n * static_cast<double>(context) * kv_token_layer;  // every sequence reads its KV
            flops += 4.0 * n * static_cast<double>(context) * heads * hd;
        } else {
            flops += 2.0 * n * n * heads * hd;  // causal: half of QK^T and AV over the prompt
        }
        add(bytes, flops);
        if (tp > 1) {
            t.allreduce_s += 2 * p.link.allreduce_seconds(tp, ar_bytes);
            t.allreduces += 2;
        }
    }
    if (v.first && tp > 1) {  // vocabulary-parallel embedding: partial rows summed across the group
        t.allreduce_s += p.link.allreduce_seconds(tp, ar_bytes);
        t.allreduces += 1;
    }
    if (v.last) {
        // final norm + LM head on the vocabulary slice, for the sampled position of each sequence
        const auto [first, last] = vocab_slice(m.vocab, tp, 0);
        const double rows = static_cast<double>(last - first);
        const double sampled = decode ? n : 1.0;
        double head_bytes = 0, head_expand = 0;
        for (const auto& g : m.globals) {
            if (g.role == TensorRole::vocab && (g.placement == Placement::last_stage || m.tied_embeddings)) {
                head_bytes = static_cast<double>(shard_bytes(m, g, tp, 0));
                head_expand = v.cpu ? rows * static_cast<double>(m.hidden) * expand_flops_per_weight(g.dtype) *
                                          cpu_expansions(static_cast<int64_t>(sampled))
                                    : 0.0;
            }
        }
        add(head_bytes, 2.0 * sampled * static_cast<double>(m.hidden) * rows + head_expand);
        if (tp > 1) {  // vocabulary-parallel sampling: each rank's best candidates are exchanged
            t.allreduce_s += p.link.allreduce_seconds(tp, sampled * 64.0);
            t.allreduces += 1;
        }
    }
    if (p.world_size > 1) {
        if (v.first) t.handover_s += p.link.send_alpha;  // rank 0's step descriptor
        if (!v.last) t.handover_s += p.link.send_seconds(ar_bytes);
        if (v.last && p.stages.size() > 1) t.handover_s += p.link.send_seconds((decode ? n : 1.0) * 4.0);
    }
    t.total_s = t.busy_s + t.allreduce_s + t.handover_s;
    return t;
}

double sum_total(const std::vector<StageTime>& v) {
    double s = 0;
    for (const auto& t : v) s += t.total_s;
    return s;
}

double max_total(const std::vector<StageTime>& v) {
    double s = 0;
    for (const auto& t : v) s = std::max(s, t.total_s);
    return s;
}

}  // namespace

Efficiency default_efficiency(DeviceKind kind) noexcept {
    if (kind == DeviceKind::cpu) return {0.90, 0.50};
    return {0.85 * 0.92, 0.60 * 0.75};
}

namespace {

// Each stage's effective bandwidth and compute: the slowest card of its group.
std::vector<StageView> stage_views(const Plan& p, Efficiency* used, const Efficiency* gpu = nullptr) {
    std::vector<StageView> views;
    for (size_t s = 0; s < p.stages.size(); ++s) {
        const StagePlan& st = p.stages[s];
        StageView v{&st, 1e30, 1e30, s == 0, s + 1 == p.stages.size()};
        for (int dev : st.devices) {
            const DeviceProfile& d = p.devices[static_cast<size_t>(dev)];
            v.cpu = v.cpu || d.kind == DeviceKind::cpu;
            const Efficiency eff = gpu && d.kind == DeviceKind::gpu ? *gpu : default_efficiency(d.kind);
            v.bandwidth = std::min(v.bandwidth, d.bandwidth * eff.bandwidth);
            v.flops = std::min(v.flops, d.flops * eff.compute);
            if (used) *used = eff;
        }
        views.push_back(v);
    }
    return views;
}

// `batch` sequences split into one micro-batch per stage (where the batch allows): a micro-batch's
// round trip is the sum of the stages; with k in flight a stage is busy k times per round trip,
// so the slowest stage bounds the cycle. Returns the cycle (the time between two tokens of one
// sequence) and fills `stages` with one micro-batch's stage times.
double decode_cycle(const ModelDesc& m, const Plan& p, const std::vector<StageView>& views, int64_t batch,
                    int64_t context, int64_t& micro_batches, std::vector<StageTime>& stages) {
    micro_batches = std::min(static_cast<int64_t>(p.stages.size()), std::max<int64_t>(1, batch));
    const int64_t micro = (batch + micro_batches - 1) / micro_batches;
    stages.clear();
    for (const auto& v : views) stages.push_back(stage_time(m, p, v, micro, context, true));
    return std::max(sum_total(stages), static_cast<double>(micro_batches) * max_total(stages));
}

}  // namespace

WorkloadEstimate estimate_workload(const ModelDesc& m, const Plan& p, int64_t batch, int64_t context,
                                   int64_t prompt_tokens, const Efficiency* gpu) {
    const std::vector<StageView> views = stage_views(p, nullptr, gpu);
    WorkloadEstimate w;
    std::vector<StageTime> stages;
    w.time_per_token_s = decode_cycle(m, p, views, batch, context, w.micro_batches, stages);
    w.decode_tps = static_cast<double>(batch) / w.time_per_token_s;
    stages.clear();
    for (const auto& v : views) stages.push_back(stage_time(m, p, v, prompt_tokens, 0, false));
    w.prefill_s = sum_total(stages);
    return w;
}

void estimate_plan(const ModelDesc& m, Plan& p) {
    Estimate& e = p.estimate;
    e = Estimate{};
    Efficiency eff;
    const std::vector<StageView> views = stage_views(p, &eff);
    e.bandwidth_efficiency = eff.bandwidth;
    e.compute_efficiency = eff.compute;
    e.prompt_tokens = p.serving.prompt_tokens;
    e.context_tokens = p.serving.prompt_tokens;

    for (const auto& v : views) e.batch1.push_back(stage_time(m, p, v, 1, e.context_tokens, true));
    e.decode_tps_batch1 = 1.0 / sum_total(e.batch1);

    // Sequences the KV cache admits at this context, split into one micro-batch per stage.
    e.max_batch = std::clamp<int64_t>(p.kv_tokens / std::max<int64_t>(1, e.context_tokens), 1, p.serving.max_batch);
    const double cycle = decode_cycle(m, p, views, e.max_batch, e.context_tokens, e.micro_batches, e.max_batch_stages);
    e.decode_tps_max_batch = static_cast<double>(e.max_batch) / cycle;

    for (const auto& v : views) e.prefill.push_back(stage_time(m, p, v, e.prompt_tokens, 0, false));
    e.prefill_s = sum_total(e.prefill);
}

}  // namespace tps
