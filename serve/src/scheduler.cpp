// The continuous-batching engine loop (scheduler.h).
#include "tpserve/serve/scheduler.h"

#include "scheduler_seq.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/generate.h"
#include "tpserve/partition/planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

namespace tps::serve {
namespace {

int64_t blocks(int64_t tokens) { return (tokens + kKvBlockTokens - 1) / kKvBlockTokens; }

// Finished sequences the prefix cache keeps at most (each match looks through them all).
constexpr size_t kMaxCached = 1024;

// What to take next from a queue: its first (first come, first served), or by priority the first of
// the most urgent (lowest `priority_of`). The queue is not empty.
template <class Queue, class PriorityOf>
auto next_of(Queue& queue, bool by_priority, PriorityOf priority_of) {
    auto best = queue.begin();
    if (by_priority) {
        for (auto it = queue.begin(); it != queue.end(); ++it) {
            if (priority_of(*it) < priority_of(*best)) best = it;
        }
    }
    return best;
}


}  // namespace

Scheduler::Scheduler(Driver& driver, const Tokenizer& tokenizer, SchedulerOptions options, ServeMetrics& metrics)
    : driver_(driver), tok_(tokenizer), opt_(options), m_(metrics) {
    TPS_CHECK_AS(UsageError, opt_.max_batch >= 1 && opt_.max_queue >= 0 && opt_.step_tokens >= 1 && opt_.micro_batches >= 1,
                 "scheduler: max batch, step tokens and micro-batches must be at least 1");
    opt_.context = std::min(opt_.context, driver_.model().context_tokens());
    m_.kv_capacity_tokens.set(static_cast<double>(driver_.model().kv_capacity_tokens()));
}

Scheduler::~Scheduler() = default;

Scheduler::Admission Scheduler::submit(std::vector<std::shared_ptr<Job>> jobs) {
    {
        std::lock_guard lock(mu_);
        if (stopping_) return Admission::stopping;
        if (static_cast<int64_t>(jobs.size()) > most_at_once()) return Admission::too_many;
        // the queue, plus the places the running batch has free right now. A request comes in
        // while one place is left, all its choices together: one with many choices would otherwise
        // wait for an empty queue, and be refused for ever behind a steady stream of single ones.
        // (So the queue can run over by a request's choices but one.)
        const int64_t places = opt_.max_queue + std::max<int64_t>(0, opt_.max_batch - running_count_.load());
        if (static_cast<int64_t>(waiting_.size()) >= places) return Admission::queue_full;
        for (auto& job : jobs) waiting_.push_back(std::move(job));
        m_.waiting.set(static_cast<double>(waiting_.size()));
    }
    cv_.notify_one();
    return Admission::accepted;
}

void Scheduler::stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_one();
}

void Scheduler::wake() {
    {
        std::lock_guard lock(mu_);
        woken_ = true;
    }
    cv_.notify_one();
}

bool Scheduler::idle_locked() const {
    return waiting_.empty() && running_.empty() && preempted_.empty() && in_flight_.empty();
}

void Scheduler::run() {
    try {
        for (;;) {
            {
                std::unique_lock lock(mu_);
                if (stopping_) {
                    // waiting requests end now; running ones finish
                    for (auto& job : waiting_) {
                        m_.rejected_unavailable.inc();
                        job->push(Delta::failure(ApiError::unavailable("the server is shutting down")));
                    }
                    waiting_.clear();
                    m_.waiting.set(0);
                    // preempted sequences are admitted requests: they finish like the running ones
                    if (running_.empty() && preempted_.empty() && in_flight_.empty()) break;
                }
                if (idle_locked()) {
                    cv_.wait_for(lock, std::chrono::milliseconds(500), [&] { return !waiting_.empty() || stopping_ || woken_; });
                    woken_ = false;
                    lock.unlock();
                    driver_.tick();  // keeps the other ranks' deadline from running out
                    if (report && seconds(Clock::now() - last_report_) >= opt_.report_interval) {
                        report();
                        last_report_ = Clock::now();
                    }
                    continue;
                }
            }
            sweep();
            drop_done();  // what the sweep ended leaves the running list before anything is chosen
            admit();
            const bool report_due = report && seconds(Clock::now() - last_report_) >= opt_.report_interval;
            // keep every stage busy: one micro-batch in flight per stage (none while a report waits
            // for the pipeline to drain)
            while (!report_due && static_cast<int>(in_flight_.size()) < opt_.micro_batches && submit_micro_batch()) {
            }
            if (!in_flight_.empty()) {
                auto [id, members] = std::move(in_flight_.front());
                in_flight_.pop_front();
                const StepOutput out = driver_.wait(id);
                m_.steps.inc();
                process(out, members);
            } else if (report_due) {
                report();
                last_report_ = Clock::now();
            } else if (running_.empty() || std::all_of(running_.begin(), running_.end(), [](const auto& s) { return s->in_flight; })) {
                // nothing could be scheduled (KV full with nothing in flight cannot happen: a lone
                // sequence always fits); wait briefly for news
                std::unique_lock lock(mu_);
                cv_.wait_for(lock, std::chrono::milliseconds(50));
            }
            update_gauges();
        }
        // the model outlives this loop (a benchmark runs several): the cache's sequences go with it
        while (evict_one(-1)) {
        }
        update_gauges();
        if (report) report();
    } catch (const std::exception& e) {
        fail_everything(e.what());
        throw;
    }
}

void Scheduler::sweep() {
    const auto now = Clock::now();
    const auto limit = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.request_timeout));
    for (auto it = running_.begin(); it != running_.end();) {
        Seq& s = **it;
        ++it;
        if (s.in_flight) continue;
        if (s.job->cancelled()) {
            m_.cancelled.inc();
            remove(s);
        } else if (now - s.job->arrived() > limit) {
            fail(s, ApiError(408, "timeout_error", fmt::format("the request ran past the server's timeout of {} s", opt_.request_timeout)),
                 "timeout");
        }
    }
    for (auto it = preempted_.begin(); it != preempted_.end();) {
        Seq& s = **it;
        if (s.job->cancelled() || now - s.job->arrived() > limit) {
            if (s.job->cancelled()) m_.cancelled.inc();
            else {
                m_.timed_out.inc();
                s.job->push(Delta::failure(ApiError(408, "timeout_error", fmt::format("the request ran past the server's timeout of {} s", opt_.request_timeout))));
            }
            it = preempted_.erase(it);
        } else {
            ++it;
        }
    }
    std::lock_guard lock(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
        const auto& job = *it;
        if (job->cancelled()) {
            m_.cancelled.inc();
            it = waiting_.erase(it);
        } else if (now - job->arrived() > limit) {
            m_.timed_out.inc();
            job->push(Delta::failure(ApiError(408, "timeout_error", fmt::format("the request waited past the server's timeout of {} s", opt_.request_timeout))));
            it = waiting_.erase(it);
        } else {
            ++it;
        }
    }
    m_.waiting.set(static_cast<double>(waiting_.size()));
}

// Room in the cache for `tokens` more, keeping a block of growth for every running sequence:
// cached sequences are evicted for it (not `keep`'s source), least recently used first, but only
// when that makes enough room (blocks they share with running sequences would not come free).
// False when there is none.
bool Scheduler::make_room(int64_t tokens, const Match& keep) {
    const LlamaModel& model = driver_.model();
    const int64_t want = (blocks(tokens) + static_cast<int64_t>(running_.size())) * kKvBlockTokens;
    if (model.kv_free_tokens() >= want) return true;
    if (model.kv_free_tokens() + cached_only_tokens(keep.from) < want) return false;
    while (model.kv_free_tokens() < want) {
        if (!evict_one(keep.from)) return false;
    }
    return true;
}

// Releases the least recently used cached sequence other than `keep`; false when there is none.
bool Scheduler::evict_one(int64_t keep) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if (it->id == keep) continue;
        driver_.release(it->id);
        cached_stale_ = true;
        cache_.erase(it);
        return true;
    }
    return false;
}

// KV tokens that releasing every cached sequence but `except` would free (blocks running
// sequences share with them stay).
int64_t Scheduler::cached_only_tokens(int64_t except) const {
    std::vector<int64_t> ids;
    for (const auto& c : cache_) {
        if (c.id != except) ids.push_back(c.id);
    }
    return driver_.model().kv_tokens_held_only_by(ids);
}

// The cached or running sequence whose KV begins with the most whole blocks of `tokens`, leaving
// at least one token to feed (its step gives the first output); more_soon when a running prompt
// still being prefilled will match more of them.
Scheduler::Match Scheduler::longest_prefix(const std::vector<int32_t>& tokens) const {
    Match best;
    if (!opt_.prefix_cache) return best;
    const int64_t limit = (static_cast<int64_t>(tokens.size()) - 1) / kKvBlockTokens * kKvBlockTokens;
    if (limit < kKvBlockTokens) return best;
    // whole blocks of `tokens` that the first n of `held` begin with (more than `above`, else 0)
    auto same_blocks = [&](const int32_t* held, int64_t n, int64_t above) -> int64_t {
        const int64_t most = std::min(limit, n / kKvBlockTokens * kKvBlockTokens);
        if (most <= above) return 0;
        int64_t same = 0;
        while (same < most && held[same] == tokens[static_cast<size_t>(same)]) ++same;
        return same / kKvBlockTokens * kKvBlockTokens;
    };
    auto consider = [&](int64_t id, const int32_t* held, int64_t n) {
        const int64_t same = same_blocks(held, n, best.tokens);
        if (same > best.tokens) best = {id, same};
    };
    for (const auto& c : cache_) consider(c.id, c.tokens.data(), static_cast<int64_t>(c.tokens.size()));
    // a running sequence's KV: the tokens submitted (every rank runs steps in the order posted,
    // so they are written before a later step reads them)
    const LlamaModel& model = driver_.model();
    int64_t soon = 0;
    for (const auto& s : running_) {
        if (s->done) continue;
        consider(s->id, s->tokens.data(), model.length(s->id));
        if (s->fed < s->prompt_len) soon = std::max(soon, same_blocks(s->tokens.data(), s->prompt_len, soon));
    }
    best.more_soon = soon > best.tokens;
    return best;
}

// A sequence joins the running batch: on the blocks of its match, if any, with the rest to prefill.
void Scheduler::start(Seq& s, const Match& m, bool new_request) {
    if (opt_.prefix_cache) m_.prefix_cache_queries.inc(static_cast<double>(s.tokens.size()));
    if (m.tokens == 0) return;
    driver_.share_prefix(s.id, m.from, m.tokens);
    cached_stale_ = true;
    s.fed = m.tokens;
    m_.prefix_cache_hits.inc(static_cast<double>(m.tokens));
    if (new_request) s.job->cached_tokens = m.tokens;
    const auto it = std::find_if(cache_.begin(), cache_.end(), [&](const Cached& c) { return c.id == m.from; });
    if (it != cache_.end()) cache_.splice(cache_.end(), cache_, it);  // used again: the most recent
}

void Scheduler::admit() {
    // with nothing running, the first one goes in whatever the cache holds (steps evict for it)
    Match m;
    // (a prompt that a running prefill will soon hold waits for it, and those behind it too; one
    // whose tokens are still to be scored shares nothing: it needs every position's logits)
    auto room = [&](const std::vector<int32_t>& tokens, bool may_share) {
        m = may_share ? longest_prefix(tokens) : Match{};
        if (m.more_soon) return false;
        return running_.empty() || make_room(static_cast<int64_t>(tokens.size()) - m.tokens, m);
    };
    auto priority = [](const std::unique_ptr<Seq>& s) { return s->job->request().priority; };
    auto next_preempted = [&] { return next_of(preempted_, opt_.priority, priority); };
    while (!preempted_.empty() && static_cast<int64_t>(running_.size()) < opt_.max_batch) {
        const auto it = next_preempted();
        if (!room((*it)->tokens, (*it)->scoring_done())) break;
        start(**it, m, false);
        running_.push_back(std::move(*it));
        preempted_.erase(it);
    }
    std::lock_guard lock(mu_);
    while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < opt_.max_batch) {
        const auto it = next_waiting();
        const GenerationRequest& next = (*it)->request();
        // preempted requests go first (by priority: those at least as urgent)
        if (!preempted_.empty() && (!opt_.priority || priority(*next_preempted()) <= next.priority)) break;
        if (next.max_tokens == 0 && !next.scores_prompt()) {
            // echo of the prompt alone: nothing to feed, no KV, no place in the batch
            Seq echo(std::move(*it), next_seq_++, tok_, driver_.model().samples_rows());
            waiting_.erase(it);
            prompt_done(echo);
            continue;
        }
        if (!room(next.prompt, !next.scores_prompt())) break;
        auto seq = std::make_unique<Seq>(std::move(*it), next_seq_++, tok_, driver_.model().samples_rows());
        waiting_.erase(it);
        start(*seq, m, true);
        running_.push_back(std::move(seq));
        if (running_.back()->scoring_done()) prompt_done(*running_.back());
    }
    running_count_ = static_cast<int64_t>(running_.size());
    m_.waiting.set(static_cast<double>(waiting_.size()));
}

// The waiting request to take next: the first; by priority, the first of the most urgent (the
// choices of one request share it and stay in order). Called with mu_ held and waiting_ not empty.
std::deque<std::shared_ptr<Job>>::iterator Scheduler::next_waiting() {
    return next_of(waiting_, opt_.priority, [](const std::shared_ptr<Job>& j) { return j->request().priority; });
}

// The running sequence to preempt when the cache is full: one not in flight that holds KV, never
// the one that must make progress (first come first: the oldest, and the newest goes; by
// priority: the most urgent, and the least urgent, newest first, goes). Null when none can.
Scheduler::Seq* Scheduler::preemption_victim() {
    auto eligible = [](const Seq& s) { return !s.in_flight && !s.done && s.fed > 0; };
    if (!opt_.priority) {
        for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
            if (it->get() != running_.front().get() && eligible(**it)) return it->get();
        }
        return nullptr;
    }
    // (priority, admission): the most urgent is the smallest, the victim the largest
    auto key = [](const Seq& s) { return std::pair(s.job->request().priority, s.id); };
    const Seq* keep = std::min_element(running_.begin(), running_.end(), [&](const auto& a, const auto& b) { return key(*a) < key(*b); })->get();
    Seq* victim = nullptr;
    for (const auto& s : running_) {
        if (s.get() != keep && eligible(*s) && (!victim || key(*victim) < key(*s))) victim = s.get();
    }
    return victim;
}

bool Scheduler::submit_micro_batch() {
    LlamaModel& model = driver_.model();
    std::vector<Seq*> ready;
    for (auto& s : running_) {
        if (!s->in_flight && !s->done && s->todo() > 0) ready.push_back(s.get());
    }
    if (ready.empty()) return false;
    // micro-batches of equal size: the running batch over the stages
    const size_t active = running_.size();
    const size_t target = std::max<size_t>(1, (active + static_cast<size_t>(opt_.micro_batches) - 1) /
                                                  static_cast<size_t>(opt_.micro_batches));
    // decodes first (a token each), then prompt chunks with what is left of the budget; the
    // decodes' order turns every step, so when the budget is smaller than the batch nobody waits
    // behind the same others for ever
    const auto decodes = std::stable_partition(ready.begin(), ready.end(), [](const Seq* s) { return s->todo() == 1; });
    if (decodes != ready.begin()) {
        std::rotate(ready.begin(), ready.begin() + static_cast<std::ptrdiff_t>(turn_++ % static_cast<uint64_t>(decodes - ready.begin())),
                    decodes);
    }
    const int64_t max_logit_rows = driver_.max_logit_rows();
    int64_t logit_rows = 0;
    int64_t scored_rows = 0;

    std::vector<Seq*> members;
    std::vector<int64_t> scoring_from;  // per member: where its scored chunk starts (-1: none)
    std::vector<SequenceStep> step;
    int64_t budget = opt_.step_tokens;
    int64_t free_blocks = model.kv_free_tokens() / kKvBlockTokens;
    for (Seq* s : ready) {
        if (members.size() >= target || budget <= 0) break;
        int64_t n = std::min(s->todo(), budget);
        // echo with logprobs: the prompt but its last token with every row's logits (the part
        // already scored again without, after a preemption)
        const bool scoring = s->scores_prompt && s->fed >= s->scored && s->fed < s->prompt_len - 1;
        if (s->scores_prompt && s->fed < s->prompt_len - 1) {
            n = std::min(n, (scoring ? s->prompt_len - 1 : s->scored) - s->fed);
            if (scoring) n = std::min({n, kMaxScoredRows - scored_rows, max_logit_rows - logit_rows});
            if (n <= 0) continue;
        }
        // cached sequences give way before a prompt chunk shrinks
        while (blocks(s->fed + n) - blocks(s->fed) > free_blocks) {
            const int64_t before = model.kv_free_tokens();
            if (!evict_one(-1)) break;
            free_blocks += (model.kv_free_tokens() - before) / kKvBlockTokens;
        }
        // the KV blocks this entry needs; a prompt chunk shrinks to what is free
        while (n > 0 && blocks(s->fed + n) - blocks(s->fed) > free_blocks) {
            n = std::min(n - 1, (free_blocks + blocks(s->fed)) * kKvBlockTokens - s->fed);
        }
        if (n <= 0) continue;
        const bool output = !scoring && s->fed + n == static_cast<int64_t>(s->tokens.size());
        if (output && s->kind == StepOutputKind::logits && ++logit_rows > max_logit_rows) break;
        free_blocks -= blocks(s->fed + n) - blocks(s->fed);
        budget -= n;
        SequenceStep e{s->id, std::vector<int32_t>(s->tokens.begin() + s->fed, s->tokens.begin() + s->fed + n), s->fed, false};
        if (scoring) {
            e.all_logits = true;
            e.output = StepOutputKind::logits;
            scored_rows += n;
            logit_rows += n;
        } else {
            ask_for(e, output ? s->kind : StepOutputKind::none, s->sampler);
        }
        step.push_back(std::move(e));
        members.push_back(s);
        scoring_from.push_back(scoring ? s->fed : -1);
    }
    if (step.empty()) {
        // the cache is full: preempt a sequence that is not in flight (preemption_victim: never
        // the one that must make progress), unless steps in flight will free or settle blocks
        if (!in_flight_.empty()) return false;
        if (evict_one(-1)) return true;  // try again with the blocks it held
        if (Seq* chosen = preemption_victim()) {
            Seq& victim = *chosen;
            driver_.release(victim.id);
            cached_stale_ = true;
            victim.fed = 0;
            m_.preemptions.inc();
            auto owned = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == &victim; });
            preempted_.push_front(std::move(*owned));
            running_.erase(owned);
            return true;  // try again with the blocks it held
        }
        return false;
    }
    std::vector<int64_t> fed;
    for (const auto& e : step) fed.push_back(static_cast<int64_t>(e.tokens.size()));
    const uint64_t id = driver_.submit(std::move(step));
    for (size_t i = 0; i < members.size(); ++i) {
        members[i]->in_flight = true;
        members[i]->fed += fed[i];
        members[i]->scoring_from = scoring_from[i];
    }
    in_flight_.emplace_back(id, std::move(members));
    return true;
}

void Scheduler::drop_done() {
    for (auto it = running_.begin(); it != running_.end();) {
        if ((*it)->done && !(*it)->in_flight) it = running_.erase(it);
        else ++it;
    }
    running_count_ = static_cast<int64_t>(running_.size());
}

// Marks the sequence for removal from the running list; its KV goes to the prefix cache, or is
// freed (here and, with the next descriptor, on every rank).
void Scheduler::remove(Seq& s) {
    if (s.done) return;
    s.done = true;
    const int64_t held = driver_.model().length(s.id);
    if (held == 0) return;
    cached_stale_ = true;
    if (opt_.prefix_cache && held >= kKvBlockTokens) {
        cache_.push_back({s.id, std::vector<int32_t>(s.tokens.begin(), s.tokens.begin() + held)});
        if (cache_.size() > kMaxCached) evict_one(-1);
    } else {
        driver_.release(s.id);
    }
}

void Scheduler::update_gauges() {
    drop_done();  // sequences the sweep ended
    const LlamaModel& model = driver_.model();
    const auto capacity = static_cast<double>(model.kv_capacity_tokens());
    // blocks only cached sequences hold are as good as free: the next admission may take them
    // (counted again only when a release or a share may have changed them, not every step)
    if (cached_stale_) {
        cached_tokens_ = static_cast<double>(cached_only_tokens(-1));
        cached_stale_ = false;
    }
    const auto used = capacity - static_cast<double>(model.kv_free_tokens()) - cached_tokens_;
    m_.kv_cached_tokens.set(cached_tokens_);
    m_.running.set(static_cast<double>(running_.size()));
    m_.kv_used_tokens.set(used);
    m_.kv_usage.set(capacity > 0 ? used / capacity : 0);
}

void Scheduler::fail_everything(const std::string& why) {
    const ApiError error(500, "internal_error", fmt::format("the engine failed: {}", why));
    for (auto& s : running_) {
        if (!s->done) {
            s->job->push(Delta::failure(error));
            m_.failed.inc();
        }
    }
    for (auto& s : preempted_) s->job->push(Delta::failure(error));
    std::lock_guard lock(mu_);
    for (auto& job : waiting_) job->push(Delta::failure(error));
    waiting_.clear();
    stopping_ = true;
}

}  // namespace tps::serve
