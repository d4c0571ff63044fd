// Running steps across ranks. Rank 0's Driver is what generation and the HTTP scheduler talk to:
// submit() checks a step against rank 0's copy of the KV bookkeeping (every rank keeps the same
// one), posts its compact descriptor on the control channel and runs rank 0's own part; wait()
// returns the step's output (the greedy tokens with their log-probabilities, or logits) once the
// last stage has sent it. Several steps may be in flight: with pipeline stages, stage 0 starts
// step n + 1 while stage 1 still runs step n. Every other rank runs run_worker(), which executes
// descriptors in the order posted until rank 0 says stop. In a single process (no links, no
// channel) the Driver runs each step at once.
#pragma once

#include "tpserve/comm/communicator.h"
#include "tpserve/engine/llama.h"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <vector>

namespace tps {

struct StepOutput {
    struct Entry {
        int64_t rows = 0;
        std::vector<int32_t> tokens;   // greedy: the most likely token of each row
        std::vector<float> logprobs;   // greedy: its log-probability
        std::vector<float> logits;     // logits: rows x vocab
        std::vector<Sampled> samples;  // sample: the token the backend drew (one process only)
    };
    uint64_t id = 0;
    int64_t vocab = 0;
    std::vector<Entry> entries;  // one per step entry, in step order
};

// A change rank 0 made to the KV bookkeeping between steps, done again in the same order on
// every rank before the next step: forget sequence `seq` (from < 0), or start it on the first
// `tokens` tokens of `from`'s cache (LlamaModel::share_prefix).
struct KvOp {
    int64_t seq = 0;
    int64_t from = -1;
    int64_t tokens = 0;
    bool operator==(const KvOp&) const = default;
};

// The wire forms (tested on their own; a malformed message throws CommError).
struct StepDescriptor {
    enum class Kind : uint8_t { step = 1, shutdown = 2, report = 3 };
    Kind kind = Kind::step;
    uint64_t id = 0;
    std::vector<KvOp> kv_ops;  // before the step, in order
    std::vector<SequenceStep> entries;
};
std::vector<uint8_t> encode_descriptor(const StepDescriptor& d);
StepDescriptor decode_descriptor(std::span<const uint8_t> bytes);
std::vector<uint8_t> encode_output(const StepOutput& out);
StepOutput decode_output(std::span<const uint8_t> bytes);

class Driver {
public:
    // Single process: links and control null. Split: this is rank 0 of the links' world.
    Driver(LlamaModel& model, const StageLinks* links, ControlChannel* control);
    ~Driver();
    Driver(const Driver&) = delete;
    Driver& operator=(const Driver&) = delete;

    // Checks (UsageError / KvCapacityError; nothing is posted then), posts, runs rank 0's part.
    uint64_t submit(std::vector<SequenceStep> step);
    // The output of a submitted step; steps complete in the order they were submitted.
    StepOutput wait(uint64_t id);
    StepOutput run(std::vector<SequenceStep> step) { return wait(submit(std::move(step))); }
    // Forgets a sequence here at once and on the other ranks with the next descriptor.
    void release(int64_t seq_id);
    // LlamaModel::share_prefix here at once (its UsageError leaves everything as it was) and on
    // the other ranks with the next descriptor.
    void share_prefix(int64_t seq_id, int64_t from_seq, int64_t tokens);
    // Call when idle: keeps the other ranks' deadline from running out.
    void tick();
    // Every rank's report, in rank order (rank 0's is `mine`): waits for every step in flight,
    // then asks the other ranks, each of which answers with its run_worker() `report` hook.
    std::vector<std::vector<uint8_t>> gather_reports(std::vector<uint8_t> mine);
    // Tells the other ranks to return from run_worker() (after every submitted step is waited
    // for). Idempotent; the destructor calls it, except after a failed step of a split model
    // (the job must then end: the edge reports and aborts).
    void shutdown();

    // Most logits rows one step may ask for: across ranks its output travels as one message,
    // which must stay within what MPI can count.
    int64_t max_logit_rows() const noexcept;
    int64_t in_flight() const noexcept { return static_cast<int64_t>(pending_.size()); }
    LlamaModel& model() noexcept { return model_; }

private:
    LlamaModel& model_;
    const StageLinks* links_;
    ControlChannel* control_;
    uint64_t next_id_ = 1;
    std::vector<KvOp> kv_ops_;             // not yet posted
    std::deque<uint64_t> pending_;         // submitted, not yet waited for, in order
    std::map<uint64_t, StepOutput> ready_; // outputs that arrived before their wait()
    bool shut_down_ = false;
    bool failed_ = false;  // a split step failed part-way: the ranks disagree, only ending the job is left
};

// The loop of every rank but 0; returns when rank 0 shuts down. `report` (optional) answers rank
// 0's gather_reports().
void run_worker(LlamaModel& model, const StageLinks& links, ControlChannel& control,
                const std::function<std::vector<uint8_t>()>& report = {});

// This rank's part of one step (used by both of the above): the forward pass and, on the last
// stage, the outputs — greedy tokens found across the vocabulary shards, logits gathered on the
// stage's first rank — which that rank returns (rank 0) or sends to rank 0.
std::optional<StepOutput> run_stage(LlamaModel& model, const StageLinks* links, uint64_t id,
                                    const std::vector<SequenceStep>& step);

}  // namespace tps
