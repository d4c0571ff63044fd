// The engine loop on rank 0: continuous (iteration-level) batching over the Driver. Requests
// wait in a bounded queue; each step carries one token of every running sequence plus, within the
// step's token budget, chunks of the prompts being prefilled, so running streams keep flowing
// while a long prompt is read. Admission is by KV capacity; when the cache runs out mid-decode the
// newest sequence is preempted (its blocks freed, its prompt and output prefilled again later,
// its sampler state kept, so its output is unchanged). With pipeline stages the running batch is
// split into one micro-batch per stage, all in flight at once, so every stage has work.
// With the priority policy, waiting and preempted requests are taken by (priority, arrival), and
// the cache running out preempts the least urgent running sequence (never the most urgent one).
// Cancelled (client gone) and timed-out sequences are freed at the next step. A prompt to score
// (echo with logprobs) is fed with the logits of every position but its last, at most 64 rows a
// step, and each prompt token gets its log-probability from the row before it.
//
// Prefix cache: a finished sequence's KV stays in the cache until its blocks are needed, and a
// new sequence whose prompt begins with the same whole 16-token blocks as a cached or running
// one starts on those blocks (shared, not copied: LlamaModel::share_prefix) and prefills only
// the rest. A request whose prompt shares whole blocks with one still being prefilled (the
// choices of an `n` > 1 request, or the same prompt sent at once) waits for that prefill rather
// than repeat it. Cached sequences are evicted least recently used first, before any running one
// is preempted. Outputs are the same with or without it, bit for bit.
//
// Threads: submit(), stop() and wake() may be called from any thread; run() is the engine loop and
// the only user of the Driver.
#pragma once

#include "tpserve/engine/driver.h"
#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/job.h"
#include "tpserve/serve/serve_metrics.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>

namespace tps::serve {

struct SchedulerOptions {
    int64_t max_batch = 16;        // sequences in the running batch
    int64_t max_queue = 64;        // requests waiting for a place; one more is refused (429)
    int64_t step_tokens = 256;     // tokens one step carries: a token per decode, the rest prompt chunks
    int64_t context = 4096;        // most tokens one sequence may hold
    double request_timeout = 600;  // seconds from arrival to the last token
    int micro_batches = 1;         // steps in flight at once: the pipeline's stages
    double report_interval = 5;    // seconds between calls of the report hook
    bool prefix_cache = true;      // keep finished sequences' KV for later prompts that share a prefix
    // order by each request's priority (lower first, then arrival), preempting the least urgent
    // (vLLM's --scheduling-policy priority); else first come, first served
    bool priority = false;
};

class Scheduler {
public:
    Scheduler(Driver& driver, const Tokenizer& tokenizer, SchedulerOptions options, ServeMetrics& metrics);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    enum class Admission { accepted, queue_full, stopping, too_many };
    // A request's choices are taken all together or not at all (too_many: more than the batch and
    // the queue hold together, so waiting would not help).
    Admission submit(std::vector<std::shared_ptr<Job>> jobs);
    Admission submit(std::shared_ptr<Job> job) { return submit(std::vector<std::shared_ptr<Job>>{std::move(job)}); }
    int64_t most_at_once() const noexcept { return opt_.max_queue + opt_.max_batch; }
    // Stop accepting; waiting requests end with 503; running ones finish; run() then returns.
    void stop();
    // A session cancelled its job: look at it soon.
    void wake();
    // The engine loop. Throws when a step fails (after failing every job with a 500): the edge
    // ends the process, since a split model cannot go on after a failed step.
    void run();

    // Called between steps with nothing in flight, at most every report_interval seconds and
    // once more before run() returns (per-rank figures for /metrics).
    std::function<void()> report;

private:
    struct Seq;
    // a finished sequence whose KV stays until its blocks are needed: its KV'd tokens
    struct Cached {
        int64_t id;
        std::vector<int32_t> tokens;
    };
    struct Match {
        int64_t from = -1;   // the sequence to share with
        int64_t tokens = 0;  // whole blocks
        // a running sequence whose prompt is still being prefilled will hold more of these
        // tokens soon: worth waiting for rather than prefilling them a second time
        bool more_soon = false;
    };
    bool idle_locked() const;
    Match longest_prefix(const std::vector<int32_t>& tokens) const;
    bool make_room(int64_t tokens, const Match& keep);
    bool evict_one(int64_t keep);
    int64_t cached_only_tokens(int64_t except) const;
    void start(Seq& s, const Match& m, bool new_request);
    void take_new(std::unique_lock<std::mutex>& lock);
    void sweep();
    void admit();
    std::deque<std::shared_ptr<Job>>::iterator next_waiting();
    Seq* preemption_victim();
    bool submit_micro_batch();
    void process(const StepOutput& out, const std::vector<Seq*>& members);
    void count_prompt(Seq& s);
    void score(Seq& s, const StepOutput::Entry& entry, int64_t from, int64_t vocab);
    void prompt_done(Seq& s);
    void emit(Seq& s, const Sampled& sampled);
    void push_piece(Seq& s, std::string text, bool last);
    void finish(Seq& s, const std::string& reason);
    void fail(Seq& s, const ApiError& error, const char* outcome);
    void remove(Seq& s);
    void drop_done();
    void update_gauges();
    void fail_everything(const std::string& why);

    Driver& driver_;
    const Tokenizer& tok_;
    SchedulerOptions opt_;
    ServeMetrics& m_;

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_ptr<Job>> waiting_;  // guarded by mu_
    bool stopping_ = false;                     // guarded by mu_
    bool woken_ = false;                        // guarded by mu_

    // engine thread only
    std::list<std::unique_ptr<Seq>> running_;   // in admission order
    std::deque<std::unique_ptr<Seq>> preempted_;  // waiting to be prefilled again, first first
    std::list<Cached> cache_;                     // least recently used first
    // the KV only cached sequences hold, for the gauges: counted again after a release or a share
    double cached_tokens_ = 0;
    bool cached_stale_ = false;
    std::deque<std::pair<uint64_t, std::vector<Seq*>>> in_flight_;
    int64_t next_seq_ = 1;
    uint64_t turn_ = 0;  // rotates the decodes' order from step to step
    Clock::time_point last_report_{};
    std::atomic<int64_t> running_count_{0};     // running_.size(), for submit()
    RowScratch scratch_;                        // scoring prompt rows
};

}  // namespace tps::serve
