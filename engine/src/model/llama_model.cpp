// One step of the Llama-family forward pass over a batch of sequences. Tokens of every sequence
// are laid end to end: the matmuls see one (tokens x hidden) activation, attention looks each
// token up in its own sequence's paged KV. Buffers are sized once, for the largest step.
#include "tpserve/engine/llama.h"

#include "tpserve/common/check.h"
#include "tpserve/partition/memory_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace tps {
namespace {
// The order a step's output rows take: greedy entries' (their picks), sampled entries', then
// logits entries', each in step order.
constexpr std::array<StepOutputKind, 3> kRowKinds = {StepOutputKind::greedy, StepOutputKind::sample, StepOutputKind::logits};
}  // namespace

RopeTable make_rope_table(const RopeConfig& rope, int64_t head_dim, const Vec* freq_factors);

LlamaModel::LlamaModel(ModelDesc desc, LlamaWeights weights, Backend& backend, ModelOptions options,
                       const StageLinks* links)
    : desc_(std::move(desc)), w_(std::move(weights)), be_(backend), options_(options), links_(links) {
    TPS_CHECK_AS(UsageError, options_.max_step_tokens >= 1 && options_.max_logit_rows >= 1 && options_.kv_tokens >= 1,
                 "model options: step tokens, logit rows and KV tokens must be positive");
    TPS_CHECK(!w_.layers.empty(), "model: no layers loaded");
    if (links_) {
        first_stage_ = links_->map.first_stage();
        last_stage_ = links_->map.last_stage();
        TPS_CHECK(links_->world != nullptr, "model: a split model needs the world communicator");
        TPS_CHECK((links_->tp != nullptr) == (links_->map.tp_size() > 1),
                  "model: a tensor-parallel group of {} needs its communicator (and only then)", links_->map.tp_size());
        TPS_CHECK(first_stage_ || links_->from_prev != nullptr, "model: stage {} needs its hand-over group with stage {}",
                  links_->map.stage(), links_->map.stage() - 1);
        TPS_CHECK(last_stage_ || links_->to_next != nullptr, "model: stage {} needs its hand-over group with stage {}",
                  links_->map.stage(), links_->map.stage() + 1);
        // activations go straight from the backend's memory to the communicators
        for (const Communicator* c : {links_->tp, links_->from_prev, links_->to_next}) {
            TPS_CHECK_AS(UsageError, c == nullptr || c->device_buffers() == be_.device_memory(),
                         "model: the {} backend keeps activations in {} memory but {} moves {} memory", be_.name(),
                         be_.device_memory() ? "device" : "host", c->name(), c->device_buffers() ? "device" : "host");
        }
    }
    TPS_CHECK(!first_stage_ || !w_.embedding.empty(), "model: the first stage needs the embedding");
    TPS_CHECK(!last_stage_ || !w_.lm_head.empty(), "model: the last stage needs the LM head");
    const auto& l0 = w_.layers.front();
    if (l0.moe()) check_backend_computes(desc_, be_);
    heads_ = l0.wq.rows / desc_.head_dim;
    kv_heads_ = l0.wk.rows / desc_.head_dim;
    rope_ = make_rope_table(desc_.rope, desc_.head_dim, &w_.rope_factors);
    place_weights();

    kv_layout_.layers = static_cast<int64_t>(w_.layers.size());
    kv_layout_.kv_heads = kv_heads_;
    kv_layout_.head_dim = desc_.head_dim;
    kv_layout_.block_tokens = 16;
    kv_layout_.blocks = (options_.kv_tokens + 15) / 16;
    kv_layout_.dtype = options_.kv_dtype;
    TPS_CHECK_AS(UsageError,
                 options_.kv_dtype == DType::f32 || options_.kv_dtype == DType::f16 || options_.kv_dtype == DType::bf16,
                 "--kv-dtype: {} is not supported here (f32, f16, bf16)", dtype_name(options_.kv_dtype));
    kv_ = be_.allocate(kv_bytes(), MemoryTag::kv_cache);
    free_blocks_.resize(static_cast<size_t>(kv_layout_.blocks));
    block_refs_.assign(static_cast<size_t>(kv_layout_.blocks), 0);
    for (int64_t b = 0; b < kv_layout_.blocks; ++b) free_blocks_[static_cast<size_t>(b)] = static_cast<int32_t>(kv_layout_.blocks - 1 - b);

    // activations: x, h, o (hidden); q, k, v; gate, up, ffn (FFN shard); logits rows
    const StepSizes sizes = step_sizes(desc_, w_, options_, samples_rows() && last_stage_);
    const int64_t T = options_.max_step_tokens;
    const int64_t q_dim = heads_ * desc_.head_dim;
    const int64_t kv_dim = kv_heads_ * desc_.head_dim;
    const int64_t ffn = l0.ffn_rows();
    const int64_t vocab = w_.lm_head.rows;
    act_ = be_.allocate(sizes.activation_bytes, MemoryTag::activations);
    be_.reserve(sizes.limits);
    auto* base = static_cast<float*>(act_->data());
    auto take = [&](int64_t rows, int64_t cols) {
        Tensor t{base, DType::f32, rows, cols};
        base += rows * cols;
        return t;
    };
    x_ = take(T, desc_.hidden);
    h_ = take(T, desc_.hidden);
    o_ = take(T, desc_.hidden);
    q_ = take(T, q_dim);
    k_ = take(T, kv_dim);
    v_ = take(T, kv_dim);
    gate_ = take(T, std::max(ffn, q_dim));  // also holds attention's output (q_dim wide)
    gate_.cols = ffn;
    up_ = take(T, ffn);
    ffn_ = take(T, ffn);
    logits_ = take(options_.max_logit_rows, vocab);
    if (l0.moe()) {
        router_ = take(T, static_cast<int64_t>(l0.experts.size()));
        expert_in_ = take(T, desc_.hidden);
        expert_out_ = take(T, desc_.hidden);
    }
    TPS_CHECK((base - static_cast<float*>(act_->data())) * 4 == sizes.activation_bytes,
              "model: step buffers take {} bytes of the {} sized for them", (base - static_cast<float*>(act_->data())) * 4,
              sizes.activation_bytes);
}

LlamaModel::~LlamaModel() = default;

// Every matrix and vector the ops read goes to the backend's memory (nothing moves on the CPU).
// Tied embeddings are placed once and shared by the LM head.
void LlamaModel::place_weights() {
    const bool tied = !w_.lm_head.empty() && w_.lm_head.data == w_.embedding.data &&
                      w_.lm_head.rows == w_.embedding.rows && w_.lm_head_first == w_.embedding_first;
    if (!w_.embedding.empty()) be_.place(w_.embedding);
    if (tied) {
        w_.lm_head = w_.embedding.alias();
    } else if (!w_.lm_head.empty()) {
        be_.place(w_.lm_head);
    }
    if (!w_.final_norm.empty()) be_.place(w_.final_norm);
    for (auto& l : w_.layers) {
        for (Weight* w : l.matrices()) be_.place(*w);
        for (Vec* v : {&l.attn_norm, &l.ffn_norm, &l.bq, &l.bk, &l.bv, &l.bo, &l.b_gate, &l.b_up, &l.b_down}) {
            if (!v->empty()) be_.place(*v);
        }
    }
}

int64_t LlamaModel::kv_bytes() const noexcept {
    const int64_t elem = kv_layout_.dtype == DType::f32 ? 4 : 2;
    return kv_layout_.layers * 2 * kv_layout_.blocks * kv_layout_.block_tokens * kv_layout_.token_stride() * elem;
}

// the planner counts the backend's sampling buffer with these (gpu_sampling_bytes)
static_assert(sizeof(RowSampling) == kRowSamplingBytes && sizeof(PenaltyEntry) == kPenaltyEntryBytes);

StepSizes step_sizes(const ModelDesc& desc, const LlamaWeights& w, const ModelOptions& options, bool samples) {
    TPS_CHECK(!w.layers.empty(), "model: no layers loaded");
    const LayerWeights& l0 = w.layers.front();
    StepSizes s;
    StepLimits& lim = s.limits;
    lim.max_tokens = options.max_step_tokens;
    lim.head_dim = desc.head_dim;
    lim.heads = l0.wq.rows / desc.head_dim;
    lim.kv_heads = l0.wk.rows / desc.head_dim;
    for (const auto& l : w.layers) {
        for (const Weight* m : l.matrices()) lim.matrices.push_back(m);
    }
    if (!w.lm_head.empty()) lim.matrices.push_back(&w.lm_head);
    if (samples && !w.lm_head.empty()) {
        lim.sample_rows = options.max_logit_rows;
        lim.sample_penalties = w.lm_head.rows;  // a row penalises each token at most once
    }
    const int64_t T = options.max_step_tokens;
    const int64_t q_dim = lim.heads * desc.head_dim;
    const int64_t kv_dim = lim.kv_heads * desc.head_dim;
    const int64_t ffn = l0.ffn_rows();
    const int64_t experts = static_cast<int64_t>(l0.experts.size());  // (MoE: router logits, an expert's rows in and out)
    const int64_t floats = T * (3 * desc.hidden + q_dim + 2 * kv_dim + 2 * ffn + std::max(ffn, q_dim)) +
                           options.max_logit_rows * w.lm_head.rows + (experts > 0 ? T * (experts + 2 * desc.hidden) : 0);
    s.activation_bytes = floats * 4;
    return s;
}

ModelOptions model_options_for(const Plan& plan) {
    ModelOptions mo;
    // a decode step of the whole batch is as large as a prefill chunk can be (the planner sizes
    // the activations for the larger)
    mo.max_step_tokens = std::max(plan.serving.prefill_chunk, plan.serving.max_batch);
    mo.max_logit_rows = plan.serving.max_batch;
    mo.kv_tokens = plan.kv_tokens;
    mo.kv_dtype = plan.serving.kv_dtype;
    return mo;
}

int64_t LlamaModel::kv_capacity_tokens() const noexcept { return kv_layout_.blocks * kv_layout_.block_tokens; }

int64_t LlamaModel::context_tokens() const noexcept {
    int64_t c = std::min(desc_.max_context, kv_capacity_tokens());
    if (desc_.sliding_window > 0) c = std::min(c, desc_.sliding_window);
    return c;
}

int64_t LlamaModel::kv_free_tokens() const noexcept {
    return static_cast<int64_t>(free_blocks_.size()) * kv_layout_.block_tokens;
}

int64_t LlamaModel::kv_tokens_held_only_by(std::span<const int64_t> seqs) const {
    std::unordered_map<int32_t, int32_t> holders;  // block: how many of `seqs` hold it
    for (int64_t id : seqs) {
        const auto it = seqs_.find(id);
        if (it == seqs_.end()) continue;
        for (int32_t b : it->second.blocks) ++holders[b];
    }
    int64_t blocks = 0;
    for (const auto& [b, n] : holders) blocks += n == block_refs_[static_cast<size_t>(b)] ? 1 : 0;
    return blocks * kv_layout_.block_tokens;
}

int64_t LlamaModel::length(int64_t seq_id) const {
    const auto it = seqs_.find(seq_id);
    return it == seqs_.end() ? 0 : it->second.length;
}

void LlamaModel::release(int64_t seq_id) {
    const auto it = seqs_.find(seq_id);
    if (it == seqs_.end()) return;
    for (int32_t b : it->second.blocks) {
        if (--block_refs_[static_cast<size_t>(b)] == 0) free_blocks_.push_back(b);
    }
    seqs_.erase(it);
}

void LlamaModel::share_prefix(int64_t seq_id, int64_t from_seq, int64_t tokens) {
    TPS_CHECK_AS(UsageError, !seqs_.contains(seq_id), "share: sequence {} already exists", seq_id);
    const auto from = seqs_.find(from_seq);
    TPS_CHECK_AS(UsageError, from != seqs_.end(), "share: sequence {} does not exist", from_seq);
    TPS_CHECK_AS(UsageError, tokens > 0 && tokens % kv_layout_.block_tokens == 0 && tokens <= from->second.length,
                 "share: {} tokens of sequence {} (which holds {}): only whole {}-token blocks it holds can be shared",
                 tokens, from_seq, from->second.length, kv_layout_.block_tokens);
    Sequence s;
    s.blocks.assign(from->second.blocks.begin(), from->second.blocks.begin() + tokens / kv_layout_.block_tokens);
    s.length = tokens;
    for (int32_t b : s.blocks) ++block_refs_[static_cast<size_t>(b)];
    seqs_.emplace(seq_id, std::move(s));
}

void LlamaModel::validate(const std::vector<SequenceStep>& step) const {
    TPS_CHECK_AS(UsageError, !step.empty(), "step: no sequences");
    int64_t n_tokens = 0;
    std::unordered_set<int64_t> seen;
    for (const auto& e : step) {
        TPS_CHECK_AS(UsageError, !e.tokens.empty(), "step: sequence {} has no tokens", e.seq_id);
        TPS_CHECK_AS(UsageError, seen.insert(e.seq_id).second, "step: sequence {} appears twice", e.seq_id);
        TPS_CHECK_AS(UsageError, e.start_pos == length(e.seq_id),
                     "step: sequence {} continues at position {} but holds {} tokens", e.seq_id, e.start_pos,
                     length(e.seq_id));
        TPS_CHECK_AS(UsageError, e.start_pos + static_cast<int64_t>(e.tokens.size()) <= context_tokens(),
                     "step: sequence {} would reach {} tokens, past the context of {}{}", e.seq_id,
                     e.start_pos + static_cast<int64_t>(e.tokens.size()), context_tokens(),
                     desc_.sliding_window > 0 && desc_.sliding_window == context_tokens()
                         ? " (the model's sliding attention window; attending past it is not implemented)"
                         : "");
        for (int32_t t : e.tokens) {
            TPS_CHECK_AS(UsageError, t >= 0 && t < desc_.vocab, "step: token id {} is outside the vocabulary of {}", t,
                         desc_.vocab);
        }
        if (e.output == StepOutputKind::sample) {
            TPS_CHECK_AS(UsageError, samples_rows(), "step: sequence {} asks the backend to sample, which a split model does not (ask for logits)",
                         e.seq_id);
            TPS_CHECK_AS(UsageError, !e.all_logits, "step: sequence {} asks the backend to sample every token's row; it samples the last",
                         e.seq_id);
            const auto& r = e.sampling;
            TPS_CHECK_AS(UsageError, r.temperature >= 0 && r.top_k >= 0 && r.top_p > 0 && r.top_p <= 1 && r.min_p >= 0 && r.min_p <= 1 &&
                                         r.top_logprobs >= 0 && r.top_logprobs <= kMaxTopLogprobs && r.u >= 0 && r.u < 1,
                         "step: sequence {} has sampling parameters out of range (temperature {}, top_k {}, top_p {}, min_p {}, "
                         "top_logprobs {}, u {})",
                         e.seq_id, r.temperature, r.top_k, r.top_p, r.min_p, r.top_logprobs, r.u);
            // a device rewrites the penalised logits in parallel: each token once
            std::unordered_set<int32_t> penalised;
            for (const auto& p : e.penalties) {
                TPS_CHECK_AS(UsageError, p.token >= 0 && p.token < desc_.vocab && penalised.insert(p.token).second,
                             "step: sequence {} penalises token {} {}", e.seq_id, p.token,
                             p.token >= 0 && p.token < desc_.vocab ? "twice" : "outside the vocabulary");
            }
        }
        n_tokens += static_cast<int64_t>(e.tokens.size());
    }
    TPS_CHECK_AS(UsageError, n_tokens <= options_.max_step_tokens,
                 "step: {} tokens, more than the {} a step holds (feed long prompts in chunks)", n_tokens,
                 options_.max_step_tokens);
    // KV blocks for every sequence's new length; all or nothing
    int64_t need = 0;
    for (const auto& e : step) {
        const auto it = seqs_.find(e.seq_id);
        const int64_t have = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
        const int64_t want = (e.start_pos + static_cast<int64_t>(e.tokens.size()) + 15) / 16;
        need += std::max<int64_t>(0, want - have);
    }
    if (need > static_cast<int64_t>(free_blocks_.size())) {
        throw KvCapacityError(fmt::format("KV cache full: the step needs {} more blocks, {} are free", need,
                                          free_blocks_.size()));
    }
}

StepResult LlamaModel::forward(const std::vector<SequenceStep>& step) {
    const auto started = std::chrono::steady_clock::now();
    validate(step);
    int64_t n_tokens = 0;
    int64_t n_rows = 0;
    for (const auto& e : step) {
        n_tokens += static_cast<int64_t>(e.tokens.size());
        n_rows += e.rows();
    }

    // If anything below throws, the blocks taken here go back and new sequences are forgotten:
    // a failed step leaves the cache as it was.
    struct Taken {
        int64_t seq;
        size_t blocks_before;
        bool created;
    };
    std::vector<Taken> taken;
    struct Rollback {
        LlamaModel& m;
        std::vector<Taken>& taken;
        bool armed = true;
        ~Rollback() {
            if (!armed) return;
            if (m.links_ != nullptr) {
                // collectives this step queued are not left running: waited for, or, when one
                // stalls, aborted with its communicators (bounded by their deadline)
                try {
                    m.be_.synchronize();
                } catch (...) {  // (the step's own error is the one to report)
                }
            }
            for (const auto& t : taken) {
                auto& s = m.seqs_[t.seq];
                while (s.blocks.size() > t.blocks_before) {
                    m.block_refs_[static_cast<size_t>(s.blocks.back())] = 0;  // taken below: this sequence's alone
                    m.free_blocks_.push_back(s.blocks.back());
                    s.blocks.pop_back();
                }
                if (t.created) m.seqs_.erase(t.seq);
            }
        }
    } rollback{*this, taken};
    StepLayout layout;
    std::vector<int32_t> ids;
    ids.reserve(static_cast<size_t>(n_tokens));
    for (const auto& e : step) {
        const bool created = !seqs_.contains(e.seq_id);
        Sequence& s = seqs_[e.seq_id];
        taken.push_back({e.seq_id, s.blocks.size(), created});
        const int64_t want = (e.start_pos + static_cast<int64_t>(e.tokens.size()) + 15) / 16;
        while (static_cast<int64_t>(s.blocks.size()) < want) {
            s.blocks.push_back(free_blocks_.back());
            block_refs_[static_cast<size_t>(free_blocks_.back())] = 1;
            free_blocks_.pop_back();
        }
        const auto index = static_cast<int32_t>(layout.sequences.size());
        layout.sequences.push_back({s.blocks.data(), static_cast<int64_t>(s.blocks.size())});
        for (size_t i = 0; i < e.tokens.size(); ++i) {
            ids.push_back(e.tokens[i]);
            layout.positions.push_back(static_cast<int32_t>(e.start_pos + static_cast<int64_t>(i)));
            layout.sequence.push_back(index);
        }
    }

    be_.start_step(repeat_key(step));
    be_.begin_step(layout);
    Tensor x = x_.slice_rows(0, n_tokens);
    if (first_stage_) {
        be_.embedding(w_.embedding, w_.embedding_first, ids, x);
        all_reduce(x, "vocabulary-parallel embedding", SIZE_MAX);
    } else {
        const auto& m = links_->map;
        links_->from_prev->recv(x.data, n_tokens * desc_.hidden * 4, m.handover_rank(m.receive_from(), m.stage() - 1),
                                "hidden states from the previous stage");
    }
    run_layers(n_tokens, layout);

    StepResult out;
    if (!last_stage_) {
        const auto& m = links_->map;
        for (int peer : m.send_to()) {
            links_->to_next->send(x.data, n_tokens * desc_.hidden * 4, m.handover_rank(peer, m.stage()),
                                  "hidden states to the next stage");
        }
    } else {
        // the rows asked for, in kRowKinds' order
        std::vector<int64_t> rows;
        rows.reserve(static_cast<size_t>(n_rows));
        out.first_row.assign(step.size(), 0);
        out.rows.assign(step.size(), 0);
        std::array<int64_t, 3> ends{};  // where each kind's rows end
        for (size_t k = 0; k < kRowKinds.size(); ++k) {
            const int64_t begin = k == 0 ? 0 : ends[k - 1];
            int64_t token = 0;
            for (size_t e = 0; e < step.size(); ++e) {
                const auto n = static_cast<int64_t>(step[e].tokens.size());
                if (step[e].output == kRowKinds[k]) {
                    out.first_row[e] = static_cast<int64_t>(rows.size()) - begin;
                    out.rows[e] = step[e].rows();
                    for (int64_t i = n - step[e].rows(); i < n; ++i) rows.push_back(token + i);
                }
                token += n;
            }
            ends[k] = static_cast<int64_t>(rows.size());
        }
        compute_logits(rows, ends, step, out);
    }
    // a split model's step ends when its collectives have (its device work and hand-overs queued on
    // the backend's stream, their wait bounded by the communicators' deadline)
    if (links_ != nullptr) be_.synchronize();
    for (const auto& e : step) seqs_[e.seq_id].length = e.start_pos + static_cast<int64_t>(e.tokens.size());
    rollback.armed = false;
    ++steps_run_;
    forward_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return out;
}

// Non-zero for a step a backend may record and replay (Backend::start_step): in one process
// (collectives stay out of it), every entry one token, one kind of output, one round of logits;
// not for an MoE model, whose routing reads each layer's router logits on the host mid-step.
uint64_t LlamaModel::repeat_key(const std::vector<SequenceStep>& step) const {
    if (links_ != nullptr || w_.layers.front().moe()) return 0;
    const StepOutputKind kind = step.front().output;
    if (kind == StepOutputKind::none || static_cast<int64_t>(step.size()) > options_.max_logit_rows) return 0;
    for (const auto& e : step) {
        if (e.tokens.size() != 1 || e.output != kind) return 0;
    }
    // this model's own: two models on one backend never share a recording
    const auto self = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(this));
    const uint64_t shape = (static_cast<uint64_t>(step.size()) << 8) | static_cast<uint64_t>(kind);
    return ((self * 0x9E3779B97F4A7C15ull) ^ shape) | 1u;
}

// Final norm and LM head for the given token rows of x (in kRowKinds' order, each kind's rows
// ending at ends[k]), in rounds of max_logit_rows: greedy rows end as picks (the backend finds
// each row's best token), sampled rows as tokens the backend draws, the rest as logits copied to
// the host.
void LlamaModel::compute_logits(const std::vector<int64_t>& rows, const std::array<int64_t, 3>& ends,
                                const std::vector<SequenceStep>& step, StepResult& out) {
    const int64_t vocab = w_.lm_head.rows;
    const auto n_rows = static_cast<int64_t>(rows.size());
    out.vocab = vocab;
    out.vocab_first = w_.lm_head_first;
    out.picks.resize(static_cast<size_t>(ends[0]));
    out.samples.resize(static_cast<size_t>(ends[1] - ends[0]));
    out.logits.resize(static_cast<size_t>((n_rows - ends[1]) * vocab));
    if (n_rows == 0) return;
    // the sampled rows' parameters, in row order, their penalties in one list
    std::vector<RowSampling> how;
    std::vector<PenaltyEntry> penalties;
    for (const auto& e : step) {
        if (e.output != StepOutputKind::sample) continue;
        RowSampling r = e.sampling;
        r.penalties_first = static_cast<int32_t>(penalties.size());
        r.penalties_count = static_cast<int32_t>(e.penalties.size());
        penalties.insert(penalties.end(), e.penalties.begin(), e.penalties.end());
        how.push_back(r);
    }
    std::vector<SampledRow> sampled(how.size());
    be_.gather_rows(x_, rows, o_.slice_rows(0, n_rows));
    be_.rmsnorm(o_.slice_rows(0, n_rows), w_.final_norm, static_cast<float>(desc_.rms_norm_eps), h_.slice_rows(0, n_rows));
    for (size_t k = 0; k < kRowKinds.size(); ++k) {
        const int64_t first = k == 0 ? 0 : ends[k - 1], last = ends[k];
        for (int64_t r0 = first; r0 < last; r0 += options_.max_logit_rows) {
            const int64_t n = std::min(options_.max_logit_rows, last - r0);
            const Tensor logits = logits_.slice_rows(0, n);
            be_.matmul(w_.lm_head, h_.slice_rows(r0, n), logits);
            if (kRowKinds[k] == StepOutputKind::greedy) {
                be_.greedy_rows(logits, w_.lm_head_first, out.picks.data() + r0);
            } else if (kRowKinds[k] == StepOutputKind::sample) {
                const auto i = static_cast<size_t>(r0 - first);
                sample_rows(logits, std::span(how).subspan(i, static_cast<size_t>(n)), penalties, sampled.data() + i);
            } else {
                be_.to_host(logits, out.logits.data() + (r0 - first) * vocab);
            }
        }
    }
    for (size_t i = 0; i < sampled.size(); ++i) out.samples[i] = from_device(sampled[i]);
}

// The sampled rows whose logits are `logits`, drawn by the backend in calls whose penalty lists
// together hold at most a vocabulary's worth of entries (what the backend reserved, and the
// planner counted: StepLimits::sample_penalties). A row penalises each token at most once
// (validate), so one row always fits; rows are independent, so the cut changes no draw. The
// rows' lists lie one after another (compute_logits), so a call passes its part of the list.
void LlamaModel::sample_rows(const Tensor& logits, std::span<const RowSampling> how,
                             std::span<const PenaltyEntry> penalties, SampledRow* out) {
    const auto cap = static_cast<size_t>(w_.lm_head.rows);
    std::vector<RowSampling> part;
    for (size_t a = 0; a < how.size();) {
        const auto from = static_cast<size_t>(how[a].penalties_first);
        size_t b = a, listed = 0;
        part.clear();
        for (; b < how.size() && (b == a || listed + static_cast<size_t>(how[b].penalties_count) <= cap); ++b) {
            TPS_CHECK(static_cast<size_t>(how[b].penalties_first) == from + listed,
                      "sample_rows: row {}'s penalties are out of order", b);
            RowSampling r = how[b];
            r.penalties_first = static_cast<int32_t>(listed);
            listed += static_cast<size_t>(how[b].penalties_count);
            part.push_back(r);
        }
        TPS_CHECK(from + listed <= penalties.size(), "sample_rows: penalties past the list");
        be_.sample_rows(logits.slice_rows(static_cast<int64_t>(a), static_cast<int64_t>(b - a)), part,
                        penalties.subspan(from, listed), out + a);
        a = b;
    }
}

// Sums t over this stage's tensor-parallel group (nothing in a single process or with tp 1).
void LlamaModel::all_reduce(Tensor t, const char* what, size_t layer) {
    if (links_ == nullptr || links_->tp == nullptr) return;
    char label[96];
    const auto r = layer == SIZE_MAX
                       ? fmt::format_to_n(label, sizeof label - 1, "{}", what)
                       : fmt::format_to_n(label, sizeof label - 1, "{}, layer {}", what,
                                          links_->map.first_layer() + static_cast<int64_t>(layer));
    links_->tp->all_reduce_sum(t.data, t.rows * t.cols, DType::f32,
                               std::string_view(label, std::min(r.size, sizeof label - 1)));
}

void LlamaModel::run_layers(int64_t T, const StepLayout& layout) {
    const float eps = static_cast<float>(desc_.rms_norm_eps);
    const std::span<const int32_t> pos(layout.positions);
    Tensor x = x_.slice_rows(0, T), h = h_.slice_rows(0, T), o = o_.slice_rows(0, T);
    Tensor q = q_.slice_rows(0, T), k = k_.slice_rows(0, T), v = v_.slice_rows(0, T);
    Tensor gate = gate_.slice_rows(0, T), up = up_.slice_rows(0, T), ffn = ffn_.slice_rows(0, T);
    // attention's output reuses the gate buffer (the MLP starts after it is consumed)
    Tensor attn{gate_.data, DType::f32, T, q.cols};
    for (size_t l = 0; l < w_.layers.size(); ++l) {
        const LayerWeights& L = w_.layers[l];
        // what the matmul after the last one of this layer reads (a prefetch hint)
        const Weight* after = l + 1 < w_.layers.size() ? &w_.layers[l + 1].wq
                              : w_.lm_head.empty()      ? nullptr
                                                        : &w_.lm_head;
        // (after the first layer, the norm came with the previous layer's last residual add)
        if (l == 0) be_.rmsnorm(x, L.attn_norm, eps, h);
        const Backend::Product qkv[] = {{&L.wq, q}, {&L.wk, k}, {&L.wv, v}};
        be_.matmul_multi(h, qkv, &L.wo);
        if (!L.bq.empty()) be_.add_bias(q, L.bq);
        if (!L.bk.empty()) be_.add_bias(k, L.bk);
        if (!L.bv.empty()) be_.add_bias(v, L.bv);
        be_.rope(q, desc_.head_dim, rope_, pos);
        be_.rope(k, desc_.head_dim, rope_, pos);
        be_.kv_store(*kv_, kv_layout_, static_cast<int64_t>(l), k, v, layout);
        be_.attention(q, *kv_, kv_layout_, static_cast<int64_t>(l), layout, heads_, attn);
        be_.matmul(L.wo, attn, o, L.moe() ? &L.router : &L.w_gate);
        all_reduce(o, "after the attention output", l);  // row-parallel: biases once, after the sum
        if (!L.bo.empty()) be_.add_bias(o, L.bo);
        be_.add_rmsnorm(x, o, L.ffn_norm, eps, h);
        if (L.moe()) {
            moe_ffn(L, h, o, T);
        } else {
            const Backend::Product gate_up[] = {{&L.w_gate, gate}, {&L.w_up, up}};
            be_.matmul_multi(h, gate_up, &L.w_down);
            if (!L.b_gate.empty()) be_.add_bias(gate, L.b_gate);
            if (!L.b_up.empty()) be_.add_bias(up, L.b_up);
            be_.swiglu(gate, up, ffn);
            be_.matmul(L.w_down, ffn, o, after);
        }
        all_reduce(o, "after the MLP down projection", l);
        if (!L.b_down.empty()) be_.add_bias(o, L.b_down);
        if (l + 1 < w_.layers.size()) {
            be_.add_rmsnorm(x, o, w_.layers[l + 1].attn_norm, eps, h);
        } else {
            be_.add(x, o);  // the stage's last layer: the final norm (or the next stage) reads x
        }
    }
}

// A mixture-of-experts FFN, as Mixtral's: the router's logits for each token, softmax over the
// experts, the experts_per_token most probable taken and their probabilities renormalised to sum
// to 1; each expert runs on the tokens routed to it, and its output, times the token's weight for
// it, is added to the token's row of `o`. Under tensor parallelism every rank routes alike (the
// router is whole, its input the same) and holds a slice of every expert: `o` is a partial sum
// that the caller's all-reduce completes, as a dense FFN's.
void LlamaModel::moe_ffn(const LayerWeights& L, const Tensor& h, Tensor o, int64_t T) {
    const auto E = static_cast<int64_t>(L.experts.size());
    const int64_t k = L.experts_per_token;
    Tensor logits = router_.slice_rows(0, T);
    be_.matmul(L.router, h, logits);
    router_host_.resize(static_cast<size_t>(T * E));
    be_.to_host(logits, router_host_.data());
    expert_rows_.assign(static_cast<size_t>(E), {});
    expert_scales_.assign(static_cast<size_t>(E), {});
    std::vector<int64_t> order(static_cast<size_t>(E));
    std::vector<float> p(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
        const float* z = router_host_.data() + t * E;
        const float top = *std::max_element(z, z + E);
        float sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += p[static_cast<size_t>(e)] = std::exp(z[e] - top);
        for (float& v : p) v /= sum;
        // the k most probable (a tie: the lower expert first)
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
            return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] || (p[static_cast<size_t>(a)] == p[static_cast<size_t>(b)] && a < b);
        });
        float chosen = 0;
        for (int64_t i = 0; i < k; ++i) chosen += p[static_cast<size_t>(order[static_cast<size_t>(i)])];
        for (int64_t i = 0; i < k; ++i) {
            const auto e = static_cast<size_t>(order[static_cast<size_t>(i)]);
            expert_rows_[e].push_back(t);
            expert_scales_[e].push_back(p[e] / chosen);
        }
    }
    be_.zero(o);
    for (int64_t e = 0; e < E; ++e) {
        const std::vector<int64_t>& rows = expert_rows_[static_cast<size_t>(e)];
        if (rows.empty()) continue;
        const ExpertWeights& X = L.experts[static_cast<size_t>(e)];
        const auto n = static_cast<int64_t>(rows.size());
        Tensor in = expert_in_.slice_rows(0, n), out = expert_out_.slice_rows(0, n);
        Tensor gate = gate_.slice_rows(0, n), up = up_.slice_rows(0, n), ffn = ffn_.slice_rows(0, n);
        be_.gather_rows(h, rows, in);
        const Backend::Product gate_up[] = {{&X.w_gate, gate}, {&X.w_up, up}};
        be_.matmul_multi(in, gate_up, &X.w_down);
        be_.swiglu(gate, up, ffn);
        be_.matmul(X.w_down, ffn, out);
        be_.add_rows_scaled(out, rows, expert_scales_[static_cast<size_t>(e)], o);
    }
}

}  // namespace tps
