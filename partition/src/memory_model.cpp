// The memory model. Tensor parallelism follows the Megatron table (docs/planner.md): column-
// parallel tensors split along their output rows, row-parallel ones along their input columns,
// vocabulary tensors in ceil(V/tp) row slices, everything else replicated.
#include "tpserve/partition/memory_model.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps {
namespace {

// Vectors (norm gains, biases, RoPE factors: in == 1) are held as f32 whatever the checkpoint
// stores: they are tiny and every backend reads them in f32.
int64_t bytes_or_throw(const TensorSpec& t, DType dt, int64_t out, int64_t in) {
    if (in == 1) dt = DType::f32;
    const auto b = matrix_bytes(dt, out, in);
    TPS_CHECK(b.has_value(), "shard of {} ({} x {}) does not split into {} blocks", t.name, out, in,
              dtype_name(dt));
    return *b * t.experts;
}

}  // namespace

std::optional<std::string> tp_incompatibility(const ModelDesc& m, int tp) {
    if (tp <= 1) return std::nullopt;
    if (m.heads % tp != 0) {
        return fmt::format("tp={} does not divide {} attention heads", tp, m.heads);
    }
    if (m.kv_heads % tp != 0 && tp % m.kv_heads != 0) {
        return fmt::format("tp={} neither divides nor is a multiple of {} KV heads", tp, m.kv_heads);
    }
    for (const auto& layer : m.layer_tensors) {
        for (const auto& t : layer) {
            if (t.role == TensorRole::column && t.out % tp != 0) {
                return fmt::format("tp={} does not divide the {} output rows of {}", tp, t.out, t.name);
            }
            if (t.role == TensorRole::row) {
                if (t.in % tp != 0) {
                    return fmt::format("tp={} does not divide the {} input columns of {}", tp, t.in, t.name);
                }
                if (!matrix_bytes(t.dtype, t.out, t.in / tp)) {
                    return fmt::format("tp={} cuts the {} inputs of {} into {}, not a multiple of {}'s "
                                       "{}-element blocks",
                                       tp, t.in, t.name, t.in / tp, dtype_name(t.dtype),
                                       dtype_layout(t.dtype).block);
                }
            }
        }
    }
    return std::nullopt;
}

int64_t kv_heads_per_rank(const ModelDesc& m, int tp) noexcept {
    return m.kv_heads >= tp ? m.kv_heads / tp : 1;
}

std::pair<int64_t, int64_t> vocab_slice(int64_t vocab, int tp, int r) noexcept {
    const int64_t per = (vocab + tp - 1) / tp;
    const int64_t first = std::min(vocab, per * r);
    return {first, std::min(vocab, first + per)};
}

int64_t shard_bytes(const ModelDesc& m, const TensorSpec& t, int tp, int r) {
    switch (t.role) {
        case TensorRole::column:
            return bytes_or_throw(t, t.dtype, t.out / tp, t.in);
        case TensorRole::kv_column: {
            // rows are kv_heads x head_dim (x1 for a bias); a rank keeps its heads' rows
            const int64_t rows_per_head = t.out / m.kv_heads;
            return bytes_or_throw(t, t.dtype, rows_per_head * kv_heads_per_rank(m, tp), t.in);
        }
        case TensorRole::row:
            return bytes_or_throw(t, t.dtype, t.out, t.in / tp);
        case TensorRole::vocab: {
            const auto [first, last] = vocab_slice(t.out, tp, r);
            return bytes_or_throw(t, t.dtype, last - first, t.in);
        }
        case TensorRole::replicated:
            return bytes_or_throw(t, t.dtype, t.out, t.in);
    }
    return 0;
}

int64_t layer_weight_bytes(const ModelDesc& m, int64_t layer, int tp, int r) {
    int64_t total = 0;
    for (const auto& t : m.layer_tensors.at(static_cast<size_t>(layer))) total += shard_bytes(m, t, tp, r);
    return total;
}

int64_t global_weight_bytes(const ModelDesc& m, bool first_stage, bool last_stage, int tp, int r) {
    int64_t total = 0;
    for (const auto& t : m.globals) {
        const bool here = t.placement == Placement::every_rank ||
                          (t.placement == Placement::first_stage && first_stage) ||
                          (t.placement == Placement::last_stage && last_stage);
        if (here) total += shard_bytes(m, t, tp, r);
        // tied embeddings: the last stage needs the matrix as its LM head; when it is not also
        // the first stage it loads its own vocabulary slice of it
        if (m.tied_embeddings && t.placement == Placement::first_stage && t.role == TensorRole::vocab &&
            last_stage && !first_stage) {
            total += shard_bytes(m, t, tp, r);
        }
    }
    return total;
}

int64_t kv_bytes_per_token_layer(const ModelDesc& m, int tp, DType kv_dtype) {
    const auto elem = kv_element_bytes(kv_dtype);
    TPS_CHECK(elem.has_value(), "{} is not a KV-cache type", dtype_name(kv_dtype));
    return 2 * kv_heads_per_rank(m, tp) * m.head_dim * *elem;
}

int64_t gpu_gemm_workspace_bytes(int64_t tokens, int64_t rows, int64_t cols, DType dtype) noexcept {
    if (tokens <= kGpuGemvMaxTokens || dtype == DType::f32 || rows <= 0 || cols <= 0) return 0;
    int64_t bytes = (tokens * cols * 2 + 255) / 256 * 256;  // x in 16 bits
    if (dtype != DType::f16 && dtype != DType::bf16) {
        const int64_t slice_rows = std::max<int64_t>(1, std::min(rows, kGpuGemmSliceBytes / (cols * 2)));
        bytes += slice_rows * cols * 2;  // rows expanded to f16
    }
    return bytes;
}

int64_t gpu_attention_partial_floats(int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     int multiprocessors) noexcept {
    const int64_t blocks = std::max<int64_t>(1, tokens * kv_heads);
    const int64_t parts = (2 * int64_t{multiprocessors} + blocks - 1) / blocks;
    return parts > 1 ? tokens * heads * parts * (head_dim + 2) : 0;
}

int64_t gpu_sampling_bytes(int64_t rows, int64_t vocab) noexcept {
    return rows * kRowSamplingBytes + vocab * kPenaltyEntryBytes;
}

GpuStepWorkspace gpu_step_workspace(const ModelDesc& m, const ServingShape& s, int tp, bool last_stage, bool samples) {
    const int64_t tokens = std::max(s.prefill_chunk, s.max_batch);
    GpuStepWorkspace ws;
    // the product needing the most: every matrix a layer multiplies by (as this rank holds it),
    // and the LM head's vocabulary slice on the last stage
    auto consider = [&](const TensorSpec& t, int64_t rows, int64_t cols) {
        if (t.in > 1) ws.gemm = std::max(ws.gemm, gpu_gemm_workspace_bytes(tokens, rows, cols, t.dtype));
    };
    for (const auto& layer : m.layer_tensors) {
        for (const auto& t : layer) {
            switch (t.role) {
                case TensorRole::column: consider(t, t.out / tp, t.in); break;
                case TensorRole::kv_column: consider(t, t.out / m.kv_heads * kv_heads_per_rank(m, tp), t.in); break;
                case TensorRole::row: consider(t, t.out, t.in / tp); break;
                case TensorRole::vocab: {
                    const auto [first, last] = vocab_slice(t.out, tp, 0);
                    consider(t, last - first, t.in);
                    break;
                }
                case TensorRole::replicated: consider(t, t.out, t.in); break;
            }
        }
    }
    if (last_stage) {
        for (const auto& t : m.globals) {
            const bool head = t.role == TensorRole::vocab &&
                              (t.placement == Placement::last_stage ||
                               (m.tied_embeddings && t.placement == Placement::first_stage));
            if (!head) continue;
            const auto [first, last] = vocab_slice(t.out, tp, 0);
            consider(t, last - first, t.in);
        }
    }
    const int64_t heads = m.heads / tp, kv_heads = kv_heads_per_rank(m, tp);
    int64_t partial = 0;
    for (int64_t t = 1; t <= tokens && t * kv_heads < 2 * int64_t{kPlannedMultiprocessors}; ++t) {
        partial = std::max(partial, gpu_attention_partial_floats(t, heads, kv_heads, m.head_dim, kPlannedMultiprocessors));
    }
    ws.attention = partial * 4;
    if (last_stage && samples) {
        const auto [first, last] = vocab_slice(m.vocab, tp, 0);
        ws.sampling = gpu_sampling_bytes(s.max_batch, last - first);
    }
    ws.scratch = kGpuStepScratchBytes;
    return ws;
}

int64_t activation_bytes(const ModelDesc& m, const ServingShape& s, int tp, DeviceKind kind, bool last_stage,
                         bool samples) {
    // The engine's buffers for the largest step (layers run one after another and reuse them):
    // the residual, the normed input and a sub-layer's output (3 x hidden); this rank's q, k and
    // v; gate, up and their product (the FFN shard; MoE: one expert's, as experts run one after
    // another), gate's buffer wide enough for attention's output too; MoE adds the router's logits
    // and an expert's tokens in and out (hidden each). Attention is tiled (flash-style), so no
    // tokens x context score matrix is kept. The last stage adds f32 logits of its vocabulary
    // slice for every sequence; on a CPU twice (the sampler's working copy).
    const int64_t tokens = std::max(s.prefill_chunk, s.max_batch);
    const int64_t q = m.heads / tp * m.head_dim;
    const int64_t kv = kv_heads_per_rank(m, tp) * m.head_dim;
    const int64_t ffn = m.intermediate / tp;
    const int64_t moe = m.experts > 0 ? m.experts + 2 * m.hidden : 0;
    const int64_t per_token = 3 * m.hidden + q + 2 * kv + 2 * ffn + std::max(ffn, q) + moe;
    int64_t bytes = tokens * per_token * kActivationBytes;
    if (last_stage) {
        const auto [first, last] = vocab_slice(m.vocab, tp, 0);
        bytes += (kind == DeviceKind::cpu ? 2 : 1) * s.max_batch * (last - first) * 4;
    }
    if (kind == DeviceKind::gpu) bytes += gpu_step_workspace(m, s, tp, last_stage, samples).total();
    return bytes;
}

int64_t runtime_bytes(const DeviceProfile& d, LinkKind link, bool communicates) {
    if (d.kind == DeviceKind::cpu) return 0;  // outside the tagged allocator: see docs/planner.md
    const bool large_ws = d.sm == 0 || d.sm >= 90;
    int64_t bytes = kCudaContextBytes + (large_ws ? kCublasWorkspaceLarge : kCublasWorkspaceSmall);
    if (communicates) bytes += link == LinkKind::nvlink ? kNcclBytesNvlink : kNcclBytesPcie;
    return bytes;
}

}  // namespace tps
