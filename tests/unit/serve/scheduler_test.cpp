// The scheduler on the smollm2 fixture in one process: continuous batching, chunked prefill,
// micro-batches and preemption change nobody's output; the queue is bounded; cancelled and timed
// out requests free their KV blocks; stop() finishes what runs and refuses the rest.
#include "serve_test_support.h"

#include "tpserve/engine/structured/formats.h"
#include "tpserve/serve/scheduler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <functional>
#include <random>
#include <thread>

namespace tps::serve {
namespace {

using namespace std::chrono_literals;

struct Outcome {
    std::string text;
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    std::string finish_reason;
    int error_status = 0;
    std::vector<std::string> pieces;  // each piece's text
};

// Waits for a job's pieces through its wake-up, as an HTTP session would. The wake-up holds the
// signal it sets, not the Collector: Job::push calls it after letting go of the job's lock, so the
// engine thread may still be in it when the last piece has been taken and the Collector is gone.
class Collector {
public:
    explicit Collector(std::shared_ptr<Job> job) : job_(std::move(job)), sig_(std::make_shared<Signal>()) {
        job_->set_notify([sig = sig_] {
            std::lock_guard lock(sig->mu);
            ++sig->wakes;
            sig->cv.notify_all();
        });
    }
    ~Collector() { job_->set_notify(nullptr); }
    // Until the last piece (or `limit`).
    Outcome wait(std::chrono::milliseconds limit = 60s) {
        Outcome o;
        const auto until = std::chrono::steady_clock::now() + limit;
        for (;;) {
            for (const auto& d : job_->take()) {
                o.text += d.text;
                o.pieces.push_back(d.text);
                for (const auto& t : d.tokens) {
                    o.tokens.push_back(t.token);
                    o.logprobs.push_back(t.logprob);
                }
                if (d.error) o.error_status = d.error->status();
                if (d.last()) {
                    o.finish_reason = d.finish_reason;
                    return o;
                }
            }
            std::unique_lock lock(sig_->mu);
            if (!sig_->cv.wait_until(lock, until, [&] { return sig_->wakes > seen_; })) {
                ADD_FAILURE() << "the job did not finish in time";
                return o;
            }
            seen_ = sig_->wakes;
        }
    }
    // Until the first piece.
    void first_piece() {
        std::unique_lock lock(sig_->mu);
        sig_->cv.wait_for(lock, 30s, [&] { return sig_->wakes > 0; });
    }
    Job& job() { return *job_; }

private:
    struct Signal {
        std::mutex mu;
        std::condition_variable cv;
        int wakes = 0;
    };
    std::shared_ptr<Job> job_;
    std::shared_ptr<Signal> sig_;
    int seen_ = 0;
};

struct EngineUnderTest {
    explicit EngineUnderTest(SchedulerOptions so, int64_t kv_tokens = 4096, int64_t step_tokens = 64)
        : backend(make_cpu_backend(1)),
          model(test::fixture().desc, load_llama_weights(test::fixture().weights, test::fixture().desc, {}), *backend,
                options(kv_tokens, step_tokens)),
          driver(model, nullptr, nullptr),
          metrics(registry),
          scheduler(driver, *test::fixture().tokenizer, with_steps(so, step_tokens), metrics) {}
    ~EngineUnderTest() { stop(); }
    void start() {
        loop = std::thread([this] {
            try {
                scheduler.run();
            } catch (const std::exception& e) {
                ADD_FAILURE() << "the engine loop failed: " << e.what();
            }
        });
    }
    void stop() {
        scheduler.stop();
        if (loop.joinable()) loop.join();
    }
    static ModelOptions options(int64_t kv_tokens, int64_t step_tokens) {
        ModelOptions mo;
        mo.kv_tokens = kv_tokens;
        mo.max_step_tokens = step_tokens;
        mo.max_logit_rows = 8;
        return mo;
    }
    static SchedulerOptions with_steps(SchedulerOptions so, int64_t step_tokens) {
        so.step_tokens = step_tokens;
        return so;
    }
    std::unique_ptr<Backend> backend;
    LlamaModel model;
    Driver driver;
    MetricsRegistry registry;
    ServeMetrics metrics;
    Scheduler scheduler;
    std::thread loop;
};

std::shared_ptr<Job> job(std::vector<int32_t> prompt, int64_t max_tokens, float temperature = 0, uint64_t seed = 1) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.logprobs = 0;  // every token comes back with its piece
    return std::make_shared<Job>(std::move(r));
}

std::vector<int32_t> prompt_of(int i) {
    std::vector<int32_t> p;
    for (int k = 0; k < 3 + (i * 7) % 40; ++k) p.push_back(static_cast<int32_t>(4 + (i * 31 + k * 17) % 590));
    return p;
}

std::vector<Outcome> run_all(EngineUnderTest& e, const std::vector<std::shared_ptr<Job>>& jobs) {
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const auto& j : jobs) {
        collectors.push_back(std::make_unique<Collector>(j));
        EXPECT_EQ(e.scheduler.submit(j), Scheduler::Admission::accepted);
    }
    std::vector<Outcome> out;
    for (auto& c : collectors) out.push_back(c->wait());
    return out;
}

std::vector<std::shared_ptr<Job>> workload() {
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < 12; ++i) jobs.push_back(job(prompt_of(i), 12 + i % 5, i % 3 == 0 ? 0.8f : 0.0f, 100 + static_cast<uint64_t>(i)));
    return jobs;
}

// Each job alone (one sequence at a time) without the prefix cache: what batching and the cache
// must not change. `then` looks at the engine before it stops.
std::vector<Outcome> alone_without_cache(const std::vector<std::shared_ptr<Job>>& jobs,
                                         const std::function<void(EngineUnderTest&)>& then = {}) {
    std::vector<Outcome> alone;
    SchedulerOptions so;
    so.max_batch = 1;
    so.prefix_cache = false;
    EngineUnderTest e(so, 4096, 512);
    e.start();
    for (const auto& j : jobs) alone.push_back(run_all(e, {j}).at(0));
    if (then) then(e);
    return alone;
}

std::vector<Outcome> solo_runs() { return alone_without_cache(workload()); }

void expect_same(const std::vector<Outcome>& got, const std::vector<Outcome>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
        EXPECT_EQ(got[i].text, want[i].text) << "request " << i;
        EXPECT_EQ(got[i].finish_reason, want[i].finish_reason) << "request " << i;
        EXPECT_FALSE(got[i].tokens.empty());
    }
}

// Every sequence freed (the gauges are updated at the end of the loop's turn: wait for it).
void expect_cache_empty(EngineUnderTest& e) {
    for (int i = 0; i < 2000 && e.metrics.kv_used_tokens.value() != 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(e.metrics.kv_used_tokens.value(), 0);
}

TEST(Scheduler, ContinuousBatchingChangesNoResult) {
    const auto alone = solo_runs();
    SchedulerOptions so;
    so.max_batch = 5;
    EngineUnderTest e(so, 4096, 16);  // 16-token steps: prompts are chunked beside running decodes
    e.start();
    expect_same(run_all(e, workload()), alone);
    EXPECT_GT(e.metrics.steps.value(), 0);
    expect_cache_empty(e);
}

TEST(Scheduler, MicroBatchesChangeNoResult) {
    const auto alone = solo_runs();
    SchedulerOptions so;
    so.max_batch = 6;
    so.micro_batches = 3;
    EngineUnderTest e(so, 4096, 32);
    e.start();
    expect_same(run_all(e, workload()), alone);
}

// Short prompts with long outputs in a cache of three blocks: admission lets two or three in, and
// as they grow the newest are preempted (freed, fed again later).
TEST(Scheduler, PreemptionWhenTheCacheIsFullChangesNoResult) {
    auto jobs = [] {
        std::vector<std::shared_ptr<Job>> out;
        for (int i = 0; i < 8; ++i) {
            std::vector<int32_t> p = prompt_of(i);
            p.resize(std::min<size_t>(p.size(), 3 + static_cast<size_t>(i % 6)));
            out.push_back(job(p, 20 + i % 9, i % 3 == 0 ? 0.8f : 0.0f, 900 + static_cast<uint64_t>(i)));
        }
        return out;
    };
    const auto alone = alone_without_cache(jobs());
    SchedulerOptions so;
    so.max_batch = 8;
    EngineUnderTest e(so, 48, 32);
    e.start();
    expect_same(run_all(e, jobs()), alone);
    EXPECT_GT(e.metrics.preemptions.value(), 0);
    expect_cache_empty(e);
}

TEST(Scheduler, TheQueueIsBounded) {
    SchedulerOptions so;
    so.max_batch = 1;
    so.max_queue = 2;
    EngineUnderTest e(so);  // not started: nothing leaves the queue
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < 3; ++i) {
        jobs.push_back(job(prompt_of(i), 4));
        EXPECT_EQ(e.scheduler.submit(jobs.back()), Scheduler::Admission::accepted) << i;  // 1 place + 2 waiting
    }
    EXPECT_EQ(e.scheduler.submit(job(prompt_of(3), 4)), Scheduler::Admission::queue_full);
    EXPECT_EQ(e.metrics.waiting.value(), 3);
    std::vector<std::unique_ptr<Collector>> c;
    for (auto& j : jobs) c.push_back(std::make_unique<Collector>(j));
    e.start();
    for (auto& x : c) EXPECT_EQ(x->wait().finish_reason, "length");  // every accepted one completes
}

TEST(Scheduler, AFewChoicesAreTakenAllTogetherOrNotAtAll) {
    SchedulerOptions so;
    so.max_batch = 1;
    so.max_queue = 2;
    EngineUnderTest e(so);  // not started
    auto several = [](int n) {
        std::vector<std::shared_ptr<Job>> jobs;
        for (int i = 0; i < n; ++i) jobs.push_back(job(prompt_of(1), 4));
        return jobs;
    };
    EXPECT_EQ(e.scheduler.most_at_once(), 3);
    EXPECT_EQ(e.scheduler.submit(several(4)), Scheduler::Admission::too_many);
    EXPECT_EQ(e.scheduler.submit(several(2)), Scheduler::Admission::accepted);
    EXPECT_EQ(e.scheduler.submit(several(2)), Scheduler::Admission::queue_full);  // one place left, not two
    EXPECT_EQ(e.metrics.waiting.value(), 2);
    EXPECT_EQ(e.scheduler.submit(several(1)), Scheduler::Admission::accepted);
}

TEST(Scheduler, ACancelledRequestFreesItsBlocks) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    auto j = job(prompt_of(1), 400);
    Collector c(j);
    ASSERT_EQ(e.scheduler.submit(j), Scheduler::Admission::accepted);
    c.first_piece();
    j->cancel();
    e.scheduler.wake();
    for (int i = 0; i < 2000 && e.metrics.cancelled.value() == 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(e.metrics.cancelled.value(), 1);
    expect_cache_empty(e);
    EXPECT_EQ(e.metrics.running.value(), 0);
}

TEST(Scheduler, ARequestPastItsTimeoutEndsWith408) {
    SchedulerOptions so;
    so.request_timeout = 0.0;  // already late when it arrives
    EngineUnderTest e(so);
    e.start();
    const Outcome o = run_all(e, {job(prompt_of(2), 8)}).at(0);
    EXPECT_EQ(o.error_status, 408);
    EXPECT_EQ(e.metrics.timed_out.value(), 1);
}

// Prompts that share whole 16-token blocks with a finished or running request: a system prompt
// of 40 tokens, and a follow-up turn (a request's prompt, its output and more).
std::vector<int32_t> with_system(int i) {
    std::vector<int32_t> p;
    for (int k = 0; k < 40; ++k) p.push_back(static_cast<int32_t>(10 + (k * 13) % 500));
    for (int k = 0; k < 2 + i % 9; ++k) p.push_back(static_cast<int32_t>(4 + (i * 37 + k * 11) % 590));
    return p;
}

std::vector<std::shared_ptr<Job>> shared_workload(const std::vector<int32_t>& follow_up) {
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < 8; ++i) jobs.push_back(job(with_system(i), 10 + i % 4, i % 3 == 0 ? 0.8f : 0.0f, 300 + static_cast<uint64_t>(i)));
    jobs.push_back(job(follow_up, 9));
    return jobs;
}

// The choices of an n > 1 request (one prompt, a seed each) submitted together: the first
// prefills the prompt in chunks while the others wait for it, then they start on its blocks.
TEST(Scheduler, ChoicesShareTheirPromptsPrefill) {
    std::vector<int32_t> prompt = with_system(3);
    for (int k = 0; k < 60; ++k) prompt.push_back(static_cast<int32_t>(4 + (k * 29) % 590));
    const auto total = static_cast<int64_t>(prompt.size());
    auto choices = [&] {
        std::vector<std::shared_ptr<Job>> jobs;
        for (int i = 0; i < 4; ++i) jobs.push_back(job(prompt, 8, 0.8f, 700 + static_cast<uint64_t>(i)));
        return jobs;
    };
    const std::vector<Outcome> alone = alone_without_cache(choices());
    SchedulerOptions so;
    so.max_batch = 4;
    EngineUnderTest e(so, 4096, 32);  // 32-token steps: the prompt takes several
    e.start();
    const auto jobs = choices();
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const auto& j : jobs) collectors.push_back(std::make_unique<Collector>(j));
    ASSERT_EQ(e.scheduler.submit(jobs), Scheduler::Admission::accepted);
    std::vector<Outcome> got;
    for (auto& c : collectors) got.push_back(c->wait());
    expect_same(got, alone);
    EXPECT_NE(got[0].tokens, got[1].tokens);  // their own seeds
    const int64_t blocks = (total - 1) / 16 * 16;
    EXPECT_EQ(jobs[0]->cached_tokens.load(), 0);
    for (size_t i = 1; i < jobs.size(); ++i) EXPECT_EQ(jobs[i]->cached_tokens.load(), blocks) << "choice " << i;
    EXPECT_EQ(e.metrics.prefix_cache_hits.value(), 3 * blocks);
}

// echo: the prompt's text comes first; with logprobs every prompt token after the first gets the
// log-probability the model's logits at the position before give it (the engine's own rows,
// log-softmax here), and the generated part is what it is without echo. Scoring goes on where it
// stopped after a preemption.
TEST(Scheduler, EchoScoresThePromptWithTheModelsOwnLogits) {
    std::vector<int32_t> prompt = with_system(5);
    for (int k = 0; k < 20; ++k) prompt.push_back(static_cast<int32_t>(4 + (k * 23) % 590));
    const auto n = static_cast<int64_t>(prompt.size());
    std::vector<double> want(static_cast<size_t>(n), std::nan(""));
    {
        EngineUnderTest e(SchedulerOptions{}, 4096, 512);  // not started: the model is used directly
        SequenceStep all{1, prompt, 0, true, StepOutputKind::logits};
        const StepResult r = e.model.forward({all});
        for (int64_t i = 1; i < n; ++i) {
            const float* row = r.row(0, i - 1);
            const double mx = *std::max_element(row, row + r.vocab);
            double z = 0;
            for (int64_t v = 0; v < r.vocab; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
            want[static_cast<size_t>(i)] = row[prompt[static_cast<size_t>(i)]] - mx - std::log(z);
        }
        e.model.release(1);
    }
    const std::string prompt_text = test::fixture().tokenizer->decode(prompt, true);
    auto asking = [&](bool echo, int logprobs, int64_t max_tokens) {
        auto j = job(prompt, max_tokens);
        GenerationRequest r = j->request();
        r.echo = echo;
        r.logprobs = logprobs;
        r.sampling.top_logprobs = std::max(0, logprobs);
        return std::make_shared<Job>(std::move(r));
    };
    auto check_scores = [&](const Outcome& o, const char* what) {
        ASSERT_GE(o.tokens.size(), static_cast<size_t>(n)) << what;
        EXPECT_EQ(std::vector<int32_t>(o.tokens.begin(), o.tokens.begin() + n), prompt) << what;
        EXPECT_TRUE(std::isnan(o.logprobs[0])) << what;
        for (int64_t i = 1; i < n; ++i) EXPECT_NEAR(o.logprobs[static_cast<size_t>(i)], want[static_cast<size_t>(i)], 1e-4) << what << " " << i;
        EXPECT_EQ(o.pieces.at(0), prompt_text) << what;
    };
    for (const int64_t kv : {int64_t{4096}, int64_t{96}}) {  // 96: six blocks, so sequences are preempted
        SchedulerOptions so;
        so.max_batch = 4;
        so.prefix_cache = kv > 96;
        so.micro_batches = kv > 96 ? 1 : 2;  // two steps in flight: more grow at once
        EngineUnderTest e(so, kv, 16);  // 16-token steps: the prompt is scored in several chunks
        e.start();
        const auto plain = run_all(e, {asking(false, 0, 6)}).at(0);
        const auto jobs = std::vector<std::shared_ptr<Job>>{asking(true, 2, 0), asking(true, 2, 6), asking(true, -1, 6),
                                                            asking(true, 2, 0)};
        const auto got = run_all(e, jobs);
        if (kv == 96) {
            EXPECT_GT(e.metrics.preemptions.value(), 0);
        }
        check_scores(got[0], "max_tokens 0");
        EXPECT_EQ(got[0].tokens.size(), static_cast<size_t>(n));
        EXPECT_EQ(got[0].text, prompt_text);
        EXPECT_EQ(got[0].finish_reason, "length");
        EXPECT_EQ(jobs[0]->completion_tokens.load(), 0);
        EXPECT_EQ(jobs[0]->prompt_tokens.load(), n);
        check_scores(got[1], "max_tokens 6");
        EXPECT_EQ(std::vector<int32_t>(got[1].tokens.begin() + n, got[1].tokens.end()), plain.tokens);
        EXPECT_EQ(got[1].text, prompt_text + plain.text);
        EXPECT_EQ(got[2].pieces.at(0), prompt_text);  // echo without logprobs: the text only
        EXPECT_EQ(got[2].text, prompt_text + plain.text);
        check_scores(got[3], "max_tokens 0, beside the others");
        expect_cache_empty(e);
    }
}

TEST(Scheduler, APrefixCacheChangesNoResultAndSkipsThePrefill) {
    // the follow-up: request 0's prompt and output (greedy, alone) and a new question
    std::vector<int32_t> follow_up;
    {
        SchedulerOptions so;
        so.prefix_cache = false;
        EngineUnderTest e(so, 4096, 512);
        e.start();
        const Outcome first = run_all(e, {job(with_system(1), 30)}).at(0);
        follow_up = with_system(1);
        follow_up.insert(follow_up.end(), first.tokens.begin(), first.tokens.end());
        follow_up.insert(follow_up.end(), {7, 8, 9});
    }
    const std::vector<Outcome> alone = alone_without_cache(shared_workload(follow_up), [](EngineUnderTest& e) {
        EXPECT_EQ(e.metrics.prefix_cache_hits.value(), 0);
        EXPECT_EQ(e.metrics.kv_cached_tokens.value(), 0);
    });
    {
        // one at a time: each finds the system prompt (and the follow-up its first turn) cached
        SchedulerOptions so;
        so.max_batch = 1;
        EngineUnderTest e(so, 4096, 512);
        e.start();
        std::vector<Outcome> got;
        const auto jobs = shared_workload(follow_up);
        for (const auto& j : jobs) got.push_back(run_all(e, {j}).at(0));
        expect_same(got, alone);
        EXPECT_EQ(jobs[0]->cached_tokens.load(), 0);
        EXPECT_EQ(jobs[1]->cached_tokens.load(), 32);  // the system prompt's two whole blocks
        // request 1's 43-token prompt and the 10 of its 11 output tokens that went back in: 53 in
        // common with the follow-up, three whole blocks
        EXPECT_EQ(jobs.back()->cached_tokens.load(), 48);
        EXPECT_EQ(e.metrics.prefix_cache_hits.value(), 7 * 32 + 48);
        EXPECT_GT(e.metrics.kv_cached_tokens.value(), 0);
        expect_cache_empty(e);  // cached sequences are not counted as used
        // when the loop ends the cache is emptied: the model may serve another scheduler
        e.stop();
        EXPECT_EQ(e.model.kv_free_tokens(), e.model.kv_capacity_tokens());
    }
    {
        // all at once in a cache of 12 blocks: running sequences share, cached ones are evicted,
        // sequences are preempted
        SchedulerOptions so;
        so.max_batch = 6;
        EngineUnderTest e(so, 192, 32);
        e.start();
        expect_same(run_all(e, shared_workload(follow_up)), alone);
        EXPECT_GT(e.metrics.prefix_cache_hits.value(), 0);
        expect_cache_empty(e);
    }
}

// Churn: prompts drawn from a few shared beginnings (some repeated whole), a cache of 16 blocks,
// two micro-batches, and some requests cancelled while they run. Every request that is not
// cancelled gives what it gives alone without the cache, and when the loop ends no block is lost.
TEST(Scheduler, APrefixCacheUnderChurnChangesNoResultAndLosesNoBlock) {
    std::mt19937 rng(11);
    std::vector<std::vector<int32_t>> starts;
    for (int i = 0; i < 4; ++i) {
        std::vector<int32_t> p;
        for (int k = 0; k < 17 + 11 * i; ++k) p.push_back(static_cast<int32_t>(4 + rng() % 590));
        starts.push_back(p);
    }
    struct Ask {
        std::vector<int32_t> prompt;
        int64_t max_tokens;
        float temperature;
        bool cancel;
    };
    std::vector<Ask> asks;
    for (int i = 0; i < 24; ++i) {
        Ask a{starts[rng() % starts.size()], 3 + static_cast<int64_t>(rng() % 10), rng() % 3 == 0 ? 0.8f : 0.0f, rng() % 5 == 0};
        const auto extra = static_cast<int>(rng() % 3 == 0 ? 0 : rng() % 20);
        for (int k = 0; k < extra; ++k) a.prompt.push_back(static_cast<int32_t>(4 + rng() % 590));
        asks.push_back(std::move(a));
    }
    auto jobs_of = [&] {
        std::vector<std::shared_ptr<Job>> jobs;
        for (size_t i = 0; i < asks.size(); ++i) {
            jobs.push_back(job(asks[i].prompt, asks[i].max_tokens, asks[i].temperature, 500 + static_cast<uint64_t>(i)));
        }
        return jobs;
    };
    const std::vector<Outcome> alone = alone_without_cache(jobs_of());
    SchedulerOptions so;
    so.max_batch = 6;
    so.micro_batches = 2;
    EngineUnderTest e(so, 256, 32);
    e.start();
    const auto jobs = jobs_of();
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const auto& j : jobs) {
        collectors.push_back(std::make_unique<Collector>(j));
        ASSERT_EQ(e.scheduler.submit(j), Scheduler::Admission::accepted);
    }
    for (size_t i = 0; i < asks.size(); ++i) {
        if (!asks[i].cancel) continue;
        collectors[i]->first_piece();
        jobs[i]->cancel();
        e.scheduler.wake();
    }
    for (size_t i = 0; i < asks.size(); ++i) {
        if (asks[i].cancel) continue;  // nobody is told of a cancelled request: its client has gone
        const Outcome o = collectors[i]->wait();
        EXPECT_EQ(o.tokens, alone[i].tokens) << "request " << i;
        EXPECT_EQ(o.text, alone[i].text) << "request " << i;
    }
    EXPECT_GT(e.metrics.prefix_cache_hits.value(), 0);
    e.stop();
    EXPECT_EQ(e.model.kv_free_tokens(), e.model.kv_capacity_tokens());
}

// min_tokens: a stop token or stop string that would end the output at once is held back until
// that many tokens are out.
TEST(Scheduler, MinTokensHoldsTheStopsBack) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const Outcome free_run = run_all(e, {job(prompt_of(6), 8)}).at(0);
    ASSERT_GE(free_run.tokens.size(), 4u);
    auto with = [&](int32_t min_tokens, bool by_string) {
        auto j = job(prompt_of(6), 8);
        GenerationRequest r = j->request();
        if (by_string) {
            r.stop = {free_run.text.substr(0, 1)};
        } else {
            r.stop_ids = {free_run.tokens[0]};
        }
        r.sampling.min_tokens = min_tokens;
        if (min_tokens > 0) r.sampling.hold = r.stop_ids;
        return run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
    };
    const Outcome at_once = with(0, false);
    EXPECT_EQ(at_once.finish_reason, "stop");
    EXPECT_EQ(at_once.text, "");
    EXPECT_EQ(at_once.tokens, std::vector<int32_t>{free_run.tokens[0]});  // the stop token's logprob, not its text
    const Outcome held = with(3, false);
    ASSERT_GE(held.tokens.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_NE(held.tokens[i], free_run.tokens[0]) << i;
    // a stop string is not looked for in the first min_tokens - 1 tokens' text
    EXPECT_EQ(with(0, true).text, "");
    const Outcome late = with(2, true);
    EXPECT_EQ(late.tokens.at(0), free_run.tokens[0]);
    EXPECT_GE(late.tokens.size(), 2u);
}

// A constraint whose tokens run out after `allow` steps: it allows only token `only`, then
// nothing (the vocabulary "cannot spell" what comes next).
class RunsOut final : public TokenConstraint {
public:
    RunsOut(int32_t only, int allow) : only_(only), allow_(allow) {}
    std::unique_ptr<TokenConstraint> restart() const override { return std::make_unique<RunsOut>(only_, allow_); }
    const std::vector<uint64_t>& allowed() override {
        if (taken_ >= allow_) throw ConstraintError("nothing can follow");
        mask_.assign(16, 0);
        mask_[static_cast<size_t>(only_) / 64] |= uint64_t{1} << (only_ % 64);
        return mask_;
    }
    void accept(int32_t token) override {
        if (token != only_) throw ConstraintError("not allowed");
        ++taken_;
    }
    bool finished() const override { return false; }

private:
    int32_t only_;
    int allow_, taken_ = 0;
    std::vector<uint64_t> mask_;
};

// A request with an output format ends where the format is complete ("stop", no stop token), and
// one whose format cannot go on fails alone: the request beside it finishes as if alone.
TEST(Scheduler, OutputFormatsEndOrFailTheirOwnRequestOnly) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const ModelFiles& f = test::fixture();
    const auto vocab = std::make_shared<const structured::TokenBytes>(*f.tokenizer);
    auto choice = job(prompt_of(3), 50, 0.9f, 5);
    GenerationRequest r = choice->request();
    auto tokens = std::make_shared<structured::GrammarTokens>(structured::choice_grammar(std::vector<std::string>{"ab", "ba"}),
                                                              vocab, r.stop_ids);
    r.sampling.constraint = structured::make_grammar_constraint(tokens);
    const Outcome chosen = run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
    EXPECT_TRUE(chosen.text == "ab" || chosen.text == "ba") << chosen.text;
    EXPECT_EQ(chosen.finish_reason, "stop");

    const Outcome alone = run_all(e, {job(prompt_of(4), 10)}).at(0);
    auto doomed = job(prompt_of(5), 10);
    GenerationRequest d = doomed->request();
    int32_t a = -1;
    for (const auto& entry : vocab->sorted()) {
        if (vocab->text(entry) == "a") a = entry.token;
    }
    ASSERT_GE(a, 0);
    d.sampling.constraint = std::make_shared<RunsOut>(a, 3);
    const auto both = run_all(e, {std::make_shared<Job>(std::move(d)), job(prompt_of(4), 10)});
    EXPECT_EQ(both[0].error_status, 500);
    EXPECT_LE(both[0].tokens.size(), 3u);
    for (const int32_t t : both[0].tokens) EXPECT_EQ(t, a);
    EXPECT_EQ(both[1].text, alone.text);
    EXPECT_EQ(both[1].finish_reason, alone.finish_reason);
    EXPECT_EQ(e.metrics.failed.value(), 1);
    expect_cache_empty(e);
}

TEST(Scheduler, StopFinishesTheRunningAndRefusesTheRest) {
    SchedulerOptions so;
    so.max_batch = 1;
    EngineUnderTest e(so);
    auto running = job(prompt_of(3), 480);
    auto waiting = job(prompt_of(4), 8);
    Collector a(running), b(waiting);
    ASSERT_EQ(e.scheduler.submit(running), Scheduler::Admission::accepted);
    e.start();
    a.first_piece();
    ASSERT_EQ(e.scheduler.submit(waiting), Scheduler::Admission::accepted);
    e.scheduler.stop();
    EXPECT_EQ(e.scheduler.submit(job(prompt_of(5), 8)), Scheduler::Admission::stopping);
    EXPECT_EQ(a.wait().finish_reason, "length");
    EXPECT_EQ(b.wait().error_status, 503);
    e.stop();
}

}  // namespace
}  // namespace tps::serve

namespace tps::serve {
namespace {

// A stop string ends the output right before it: every byte of text before it is sent, none after.
TEST(Scheduler, AStopStringEndsTheTextRightBeforeIt) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const Outcome whole = run_all(e, {job(prompt_of(5), 40)}).at(0);
    ASSERT_GE(whole.text.size(), 12u) << "the fixture's output is too short to cut";
    // a stop string from the middle, starting on a character boundary
    size_t at = whole.text.size() / 2;
    while (at > 0 && (static_cast<unsigned char>(whole.text[at]) & 0xC0) == 0x80) --at;
    const std::string stop = whole.text.substr(at, 3);
    const size_t first = whole.text.find(stop);
    auto j = job(prompt_of(5), 40);
    GenerationRequest r = j->request();
    r.stop = {stop};
    const Outcome cut = run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
    EXPECT_EQ(cut.text, whole.text.substr(0, first)) << "stop '" << stop << "'";
    EXPECT_EQ(cut.finish_reason, "stop");
}

}  // namespace
}  // namespace tps::serve
