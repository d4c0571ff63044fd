// What the scheduler tests share (scheduler_test.cpp, scheduler_output_test.cpp): an engine on the
// smollm2 fixture running the scheduler's loop on a thread, jobs, and the pieces a job gets.
#pragma once

#include "serve_test_support.h"

#include "tpserve/serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace tps::serve::test {

using namespace std::chrono_literals;

struct Outcome {
    std::string text;
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    std::vector<size_t> tops;  // each token's alternatives
    std::string finish_reason;
    int error_status = 0;
    std::vector<std::string> pieces;  // each piece's text
    std::vector<TokenOut> prompt_scores;  // prompt_logprobs
    std::string stop_string;              // what ended it: a stop string,
    int32_t stop_token = -1;              // or a stop_token_ids token
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
                    o.tops.push_back(t.top.size());
                }
                o.prompt_scores.insert(o.prompt_scores.end(), d.prompt_logprobs.begin(), d.prompt_logprobs.end());
                if (d.error) o.error_status = d.error->status();
                if (d.last()) {
                    o.finish_reason = d.finish_reason;
                    o.stop_string = d.stop_string;
                    o.stop_token = d.stop_token;
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

inline std::shared_ptr<Job> job(std::vector<int32_t> prompt, int64_t max_tokens, float temperature = 0, uint64_t seed = 1) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.logprobs = 0;  // every token comes back with its piece
    return std::make_shared<Job>(std::move(r));
}

inline std::vector<int32_t> prompt_of(int i) {
    std::vector<int32_t> p;
    for (int k = 0; k < 3 + (i * 7) % 40; ++k) p.push_back(static_cast<int32_t>(4 + (i * 31 + k * 17) % 590));
    return p;
}

inline std::vector<Outcome> wait_all(const std::vector<std::unique_ptr<Collector>>& collectors) {
    std::vector<Outcome> out;
    for (const auto& c : collectors) out.push_back(c->wait());
    return out;
}

// Submits the jobs one by one to a running engine and waits for every outcome.
inline std::vector<Outcome> run_all(EngineUnderTest& e, const std::vector<std::shared_ptr<Job>>& jobs) {
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const auto& j : jobs) {
        collectors.push_back(std::make_unique<Collector>(j));
        EXPECT_EQ(e.scheduler.submit(j), Scheduler::Admission::accepted);
    }
    return wait_all(collectors);
}

// The same, the jobs queued in one go (as a request's choices are): they all wait together, and
// so run together whatever the machine's load. Submitted one by one, a slow submitter may see
// each finish before the next comes, and a test of batching or preemption would test neither.
inline std::vector<Outcome> run_together(EngineUnderTest& e, const std::vector<std::shared_ptr<Job>>& jobs) {
    std::vector<std::unique_ptr<Collector>> collectors;
    for (const auto& j : jobs) collectors.push_back(std::make_unique<Collector>(j));
    EXPECT_EQ(e.scheduler.submit(jobs), Scheduler::Admission::accepted);
    return wait_all(collectors);
}

inline std::vector<std::shared_ptr<Job>> workload() {
    std::vector<std::shared_ptr<Job>> jobs;
    for (int i = 0; i < 12; ++i) jobs.push_back(job(prompt_of(i), 12 + i % 5, i % 3 == 0 ? 0.8f : 0.0f, 100 + static_cast<uint64_t>(i)));
    return jobs;
}

// Each job alone (one sequence at a time) without the prefix cache: what batching and the cache
// must not change. `then` looks at the engine before it stops.
inline std::vector<Outcome> alone_without_cache(const std::vector<std::shared_ptr<Job>>& jobs,
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

inline std::vector<Outcome> solo_runs() { return alone_without_cache(workload()); }

inline void expect_same(const std::vector<Outcome>& got, const std::vector<Outcome>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
        EXPECT_EQ(got[i].text, want[i].text) << "request " << i;
        EXPECT_EQ(got[i].finish_reason, want[i].finish_reason) << "request " << i;
        EXPECT_FALSE(got[i].tokens.empty());
    }
}

// Every sequence freed (the gauges are updated at the end of the loop's turn: wait for it).
inline void expect_cache_empty(EngineUnderTest& e) {
    for (int i = 0; i < 2000 && e.metrics.kv_used_tokens.value() != 0; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(e.metrics.kv_used_tokens.value(), 0);
}

// Prompts that share whole 16-token blocks with a finished or running request: a system prompt
// of 40 tokens, and a follow-up turn (a request's prompt, its output and more).
inline std::vector<int32_t> with_system(int i) {
    std::vector<int32_t> p;
    for (int k = 0; k < 40; ++k) p.push_back(static_cast<int32_t>(10 + (k * 13) % 500));
    for (int k = 0; k < 2 + i % 9; ++k) p.push_back(static_cast<int32_t>(4 + (i * 37 + k * 11) % 590));
    return p;
}

}  // namespace tps::serve::test
