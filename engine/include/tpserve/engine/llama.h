// The Llama-family forward pass (Llama 2, Llama 3/3.1, Mistral, Qwen2, SmolLM2), written once
// against the Backend interface. A step is a list of (sequence, tokens, start position): prefill
// and decode mix freely, so continuous batching needs nothing more. The KV cache is paged:
// 16-token blocks handed to sequences as they grow, so no sequence reserves its maximum length.
#pragma once

#include "tpserve/comm/communicator.h"
#include "tpserve/comm/parallel_mapping.h"
#include "tpserve/common/error.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/sampler.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model.h"
#include "tpserve/partition/plan.h"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

namespace tps {

// Which part of the model this rank holds (the Plan says; a single process holds everything).
struct ShardSpec {
    int tp = 1;
    int tp_rank = 0;
    int64_t first_layer = 0;
    int64_t last_layer = -1;  // exclusive; -1: all
    bool first_stage = true;  // holds the embedding
    bool last_stage = true;   // holds the final norm and the LM head
};

// One expert of a mixture-of-experts layer: an FFN (this shard's slice of it, as a dense one's).
struct ExpertWeights {
    Weight w_gate, w_up, w_down;
};

struct LayerWeights {
    Vec attn_norm, ffn_norm;
    Weight wq, wk, wv, wo, w_gate, w_up, w_down;
    Vec bq, bk, bv, bo, b_gate, b_up, b_down;  // empty when the architecture has none
    // A mixture-of-experts layer (Mixtral): the router (every expert's row, whole on every rank)
    // and the experts, in place of w_gate, w_up and w_down (then empty); each token goes through
    // the `experts_per_token` experts its router ranks first.
    Weight router;
    std::vector<ExpertWeights> experts;
    int64_t experts_per_token = 0;

    bool moe() const noexcept { return !experts.empty(); }
    // the FFN's width on this shard (an expert's, for MoE)
    int64_t ffn_rows() const noexcept { return moe() ? experts.front().w_gate.rows : w_gate.rows; }
    // every projection the layer has, for what is done to each alike (placing, counting, touching)
    std::vector<Weight*> matrices();
    std::vector<const Weight*> matrices() const;
};

struct LlamaWeights {
    Weight embedding;  // rows [embedding_first, ...) of the vocabulary
    int64_t embedding_first = 0;
    Weight lm_head;
    int64_t lm_head_first = 0;
    Vec final_norm;
    Vec rope_factors;  // GGUF llama3 files: rope_freqs.weight
    std::vector<LayerWeights> layers;  // this shard's layers, in order
    int64_t checkpoint_bytes = 0;      // bytes read from the checkpoint for this shard
    std::shared_ptr<const WeightSource> source;  // keeps the mapped files the weights point into

    // Weight bytes used in place from the mapped checkpoint (not allocations).
    int64_t mapped_bytes() const noexcept;
    // Bytes of the matrices one decode step of one sequence reads: every layer's projections and
    // the LM head once; of an MoE layer, the router and experts_per_token experts (what the
    // benchmarks set against memory bandwidth).
    int64_t step_matrix_bytes() const noexcept;
    // Reads one byte of every page of the weights, so a mapped checkpoint is in memory before the
    // first step needs it.
    void touch() const noexcept;
};

// UsageError for a model `backend` cannot compute: a mixture-of-experts model on a device backend
// (only the CPU backend has expert layers). Called before the weights load, so a large model
// is refused at once, and by LlamaModel.
void check_backend_computes(const ModelDesc& model, const Backend& backend);

// Reads the shard's tensors, checking every shape against the model description; errors name
// the tensor.
LlamaWeights load_llama_weights(std::shared_ptr<const WeightSource> source, const ModelDesc& model,
                                const ShardSpec& shard);

// Seeded random weights of the model's shape in `type` (layers' projections, embedding and LM
// head; norms 1), for benchmarks and GPU checks. int8 is for the layers only, as --format int8:
// the embedding and LM head are then bf16.
LlamaWeights make_random_llama_weights(const ModelDesc& model, DType type, uint64_t seed);

struct ModelOptions {
    int64_t max_step_tokens = 512;  // most tokens in one step (longer prompts are fed in chunks)
    int64_t max_logit_rows = 64;    // logits computed together (more are done in rounds)
    int64_t kv_tokens = 8192;       // KV capacity, rounded up to whole blocks
    DType kv_dtype = DType::f32;    // f32, f16 or bf16 on the CPU
};

// The model sized as a plan's serving shape says: its prefill chunk (or its batch, if larger) is
// the largest step, its batch the logits rows computed together, its KV tokens and type.
ModelOptions model_options_for(const Plan& plan);

// What a model of these weights and options holds for its steps: the f32 activations of its
// largest step and its logits rows (the planner's activation_bytes without a GPU's workspace or
// a CPU sampler's copy), and the limits it gives its backend to reserve for. `samples`: its
// backend draws the tokens (LlamaModel::samples_rows, on the last stage).
struct StepSizes {
    int64_t activation_bytes = 0;
    StepLimits limits;
};
StepSizes step_sizes(const ModelDesc& desc, const LlamaWeights& weights, const ModelOptions& options, bool samples);

// What a step entry asks the last stage for: nothing (a prompt chunk that is not the last), the
// most likely token (computed across the vocabulary shards without gathering the logits), the
// logits themselves (for sampling on rank 0, or for checking against a reference), or a token
// sampled by the backend (one row, `sampling` and `penalties` saying how; in one process, where
// the row holds the whole vocabulary).
enum class StepOutputKind : uint8_t { none, greedy, logits, sample };

struct SequenceStep {
    int64_t seq_id = 0;
    std::vector<int32_t> tokens;
    int64_t start_pos = 0;     // must equal the sequence's current length
    bool all_logits = false;   // an output row for every token, not only the last
    StepOutputKind output = StepOutputKind::logits;
    RowSampling sampling{};              // output sample: how (penalties_first/count are ignored:
    std::vector<PenaltyEntry> penalties{};  // the entry's penalties are these)
    int64_t rows() const noexcept {
        return output == StepOutputKind::none ? 0 : all_logits ? static_cast<int64_t>(tokens.size()) : 1;
    }
};

// How this rank is linked to the others when the model is split (absent in a single process).
struct StageLinks {
    ParallelMapping map;
    Communicator* world = nullptr;      // every rank: step outputs to rank 0
    Communicator* tp = nullptr;         // this stage's tensor-parallel group; nullptr when tp == 1
    Communicator* from_prev = nullptr;  // hand-over group with the previous stage (not on the first)
    Communicator* to_next = nullptr;    // hand-over group with the next stage (not on the last)
    // The tensor-parallel group for host memory (the driver's greedy picks and logits slices) when
    // `tp` moves device buffers (NCCL); nullptr: `tp` takes host memory.
    Communicator* tp_host = nullptr;
};

struct StepResult {
    int64_t vocab = 0;                  // columns of each row: the LM head rows this rank holds
    int64_t vocab_first = 0;            // the first of them (0 in a single process)
    std::vector<float> logits;          // rows of `vocab` floats (entries that asked for logits)
    std::vector<GreedyPick> picks;      // one per row of entries that asked for the greedy token
    std::vector<Sampled> samples;       // one per entry that asked the backend to sample
    std::vector<int64_t> first_row;     // per step entry: its first row in `logits`, `picks` or `samples`
    std::vector<int64_t> rows;          // per step entry: how many rows
    const float* row(int64_t entry, int64_t i = 0) const {
        return logits.data() + (first_row[static_cast<size_t>(entry)] + i) * vocab;
    }
    const GreedyPick& pick(int64_t entry, int64_t i = 0) const {
        return picks[static_cast<size_t>(first_row[static_cast<size_t>(entry)] + i)];
    }
    const Sampled& sample(int64_t entry) const { return samples[static_cast<size_t>(first_row[static_cast<size_t>(entry)])]; }
};

// Thrown when a step needs more KV blocks than are free; nothing of the step was applied.
class KvCapacityError : public Error {
public:
    using Error::Error;
};

class LlamaModel {
public:
    // With `links`, the weights are this rank's shard and forward() runs this rank's part of each
    // step: the first stage embeds, the others receive hidden states from the previous stage;
    // the tensor-parallel group all-reduces after the attention output and the MLP down
    // projection; every stage but the last hands its output on; the last returns its slice of the
    // vocabulary's logits. Every rank of the world must run the same steps in the same order.
    LlamaModel(ModelDesc desc, LlamaWeights weights, Backend& backend, ModelOptions options,
               const StageLinks* links = nullptr);
    ~LlamaModel();

    StepResult forward(const std::vector<SequenceStep>& step);
    // The checks forward() makes before touching anything (tokens, positions, context, KV
    // blocks): tps::UsageError or KvCapacityError naming the problem.
    void validate(const std::vector<SequenceStep>& step) const;
    void release(int64_t seq_id);
    // Starts sequence `seq_id` (new) on the first `tokens` tokens of `from_seq`'s cache: those
    // blocks are shared, not copied (a block is free once no sequence holds it), and the new
    // sequence continues at position `tokens`. Only whole blocks can be shared (`tokens` a
    // multiple of 16, at most what from_seq holds): full blocks are never written again, so
    // neither sequence sees the other's later tokens. tps::UsageError otherwise.
    void share_prefix(int64_t seq_id, int64_t from_seq, int64_t tokens);
    int64_t length(int64_t seq_id) const;  // 0 for an unknown sequence

    const ModelDesc& desc() const noexcept { return desc_; }
    const ModelOptions& options() const noexcept { return options_; }
    const LlamaWeights& weights() const noexcept { return w_; }
    int64_t kv_capacity_tokens() const noexcept;
    // Most tokens one sequence may hold: the model's context, the KV capacity, and (until
    // windowed attention is implemented) a Mistral-style sliding window, whichever is smallest.
    int64_t context_tokens() const noexcept;
    int64_t kv_free_tokens() const noexcept;
    // Tokens of the blocks no sequence outside `seqs` holds: what releasing them all would free.
    int64_t kv_tokens_held_only_by(std::span<const int64_t> seqs) const;
    int64_t kv_bytes() const noexcept;
    int64_t steps_run() const noexcept { return steps_run_; }  // forward() calls that completed
    // Whether steps may ask for StepOutputKind::sample: in one process (the last stage's rows
    // hold the whole vocabulary).
    bool samples_rows() const noexcept { return links_ == nullptr; }
    double forward_seconds() const noexcept { return forward_seconds_; }  // their time, collectives included

private:
    struct Sequence {
        std::vector<int32_t> blocks;
        int64_t length = 0;
    };
    void place_weights();
    uint64_t repeat_key(const std::vector<SequenceStep>& step) const;
    void run_layers(int64_t n_tokens, const StepLayout& layout);
    void moe_ffn(const LayerWeights& L, const Tensor& h, Tensor o, int64_t n_tokens);
    void all_reduce(Tensor t, const char* what, size_t layer);
    void compute_logits(const std::vector<int64_t>& rows, const std::array<int64_t, 3>& ends,
                        const std::vector<SequenceStep>& step, StepResult& out);
    void sample_rows(const Tensor& logits, std::span<const RowSampling> how, std::span<const PenaltyEntry> penalties,
                     SampledRow* out);

    ModelDesc desc_;
    LlamaWeights w_;
    Backend& be_;
    ModelOptions options_;
    RopeTable rope_;
    KvLayout kv_layout_;
    std::unique_ptr<DeviceMemory> kv_;
    std::vector<int32_t> free_blocks_;
    std::vector<int32_t> block_refs_;  // per block: the sequences holding it
    std::unordered_map<int64_t, Sequence> seqs_;
    // activations of the largest step
    std::unique_ptr<DeviceMemory> act_;
    Tensor x_, h_, o_, q_, k_, v_, gate_, up_, ffn_, logits_;
    // a mixture-of-experts layer's: router logits, an expert's tokens in and out; on the host,
    // the router logits and each expert's tokens and their weights
    Tensor router_, expert_in_, expert_out_;
    std::vector<float> router_host_;
    std::vector<std::vector<int64_t>> expert_rows_;
    std::vector<std::vector<float>> expert_scales_;
    int64_t heads_ = 0, kv_heads_ = 0;  // on this rank
    const StageLinks* links_ = nullptr;
    int64_t steps_run_ = 0;
    double forward_seconds_ = 0;
    bool first_stage_ = true, last_stage_ = true;
};

}  // namespace tps
