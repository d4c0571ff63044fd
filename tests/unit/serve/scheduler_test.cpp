// The scheduler on the smollm2 fixture in one process: continuous batching, chunked prefill,
// micro-batches and preemption change nobody's output; the queue is bounded; cancelled and timed
// out requests free their KV blocks; the prefix cache; stop() finishes what runs and refuses the
// rest. What a step's output does to a sequence is scheduler_output_test.cpp's.
#include "scheduler_test_support.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

namespace tps::serve {
namespace {

using namespace std::chrono_literals;
using namespace test;

TEST(Scheduler, ContinuousBatchingChangesNoResult) {
    const auto alone = solo_runs();
    SchedulerOptions so;
    so.max_batch = 5;
    EngineUnderTest e(so, 4096, 16);  // 16-token steps: prompts are chunked beside running decodes
    e.start();
    expect_same(run_together(e, workload()), alone);
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
    expect_same(run_together(e, workload()), alone);
}

// Short prompts with long outputs for a cache of three blocks (`by_priority`: each with a priority).
std::vector<std::shared_ptr<Job>> growing_jobs(bool by_priority) {
    std::vector<std::shared_ptr<Job>> out;
    for (int i = 0; i < 8; ++i) {
        std::vector<int32_t> p = prompt_of(i);
        p.resize(std::min<size_t>(p.size(), 3 + static_cast<size_t>(i % 6)));
        GenerationRequest r = job(p, 20 + i % 9, i % 3 == 0 ? 0.8f : 0.0f, 900 + static_cast<uint64_t>(i))->request();
        if (by_priority) r.priority = (i * 5) % 3 - 1;  // -1, 1, 0, -1, ...
        out.push_back(std::make_shared<Job>(std::move(r)));
    }
    return out;
}

// Admission lets two or three in, and as they grow the newest are preempted (freed, fed again later).
TEST(Scheduler, PreemptionWhenTheCacheIsFullChangesNoResult) {
    auto jobs = [] { return growing_jobs(false); };
    const auto alone = alone_without_cache(jobs());
    SchedulerOptions so;
    so.max_batch = 8;
    EngineUnderTest e(so, 48, 32);
    e.start();
    expect_same(run_together(e, jobs()), alone);
    EXPECT_GT(e.metrics.preemptions.value(), 0);
    expect_cache_empty(e);
}

// The same under the priority policy: the victim is the least urgent, never the most urgent.
TEST(Scheduler, PreemptionByPriorityChangesNoResult) {
    auto jobs = [] { return growing_jobs(true); };
    const auto alone = alone_without_cache(jobs());
    SchedulerOptions so;
    so.max_batch = 8;
    so.priority = true;
    EngineUnderTest e(so, 48, 32);
    e.start();
    expect_same(run_together(e, jobs()), alone);
    EXPECT_GT(e.metrics.preemptions.value(), 0);
    expect_cache_empty(e);
}

// Which waiting request goes next: by arrival, or by (priority, arrival) under the priority policy.
// One place in the batch, and the engine started with every request waiting, so the order each
// one's first piece comes in is the order they were taken. Results do not depend on it.
TEST(Scheduler, ThePriorityPolicyTakesTheMostUrgentFirst) {
    const std::vector<int64_t> priorities = {0, 5, -1, 5, -1, 2};
    auto taken = [&](bool by_priority, std::vector<Outcome>* outcomes) {
        SchedulerOptions so;
        so.max_batch = 1;
        so.max_queue = 8;
        so.priority = by_priority;
        EngineUnderTest e(so);
        std::mutex mu;
        std::vector<int> order;
        std::vector<std::shared_ptr<Job>> jobs;
        for (size_t i = 0; i < priorities.size(); ++i) {
            auto j = job(prompt_of(static_cast<int>(i)), 3);
            GenerationRequest r = j->request();
            r.priority = priorities[i];
            jobs.push_back(std::make_shared<Job>(std::move(r)));
            jobs.back()->set_notify([&mu, &order, i] {
                std::lock_guard lock(mu);
                if (std::find(order.begin(), order.end(), static_cast<int>(i)) == order.end()) order.push_back(static_cast<int>(i));
            });
            EXPECT_EQ(e.scheduler.submit(jobs.back()), Scheduler::Admission::accepted);
        }
        e.start();
        for (int k = 0; k < 20000 && !std::all_of(jobs.begin(), jobs.end(), [](const auto& j) { return j->finished(); }); ++k) {
            std::this_thread::sleep_for(1ms);
        }
        e.stop();
        for (const auto& j : jobs) {
            j->set_notify(nullptr);
            Outcome o;
            for (const auto& d : j->take()) {
                for (const auto& t : d.tokens) o.tokens.push_back(t.token);
                if (d.last()) o.finish_reason = d.finish_reason;
            }
            outcomes->push_back(std::move(o));
        }
        std::lock_guard lock(mu);
        return order;
    };
    std::vector<Outcome> fcfs, urgent;
    EXPECT_EQ(taken(false, &fcfs), (std::vector<int>{0, 1, 2, 3, 4, 5}));
    EXPECT_EQ(taken(true, &urgent), (std::vector<int>{2, 4, 0, 5, 1, 3}));
    for (size_t i = 0; i < fcfs.size(); ++i) {
        EXPECT_EQ(urgent[i].tokens, fcfs[i].tokens) << i;
        EXPECT_EQ(urgent[i].finish_reason, "length") << i;
    }
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

TEST(Scheduler, ChoicesComeInTogetherWhileAPlaceIsLeft) {
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
    EXPECT_EQ(e.scheduler.submit(several(1)), Scheduler::Admission::accepted);
    EXPECT_EQ(e.scheduler.submit(several(1)), Scheduler::Admission::accepted);
    // one place left: a request with three choices comes in whole (it is not refused until the
    // queue is empty, which single requests arriving all the time would never let happen)
    EXPECT_EQ(e.scheduler.submit(several(3)), Scheduler::Admission::accepted);
    EXPECT_EQ(e.metrics.waiting.value(), 5);
    EXPECT_EQ(e.scheduler.submit(several(1)), Scheduler::Admission::queue_full);  // none left
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
    const std::vector<Outcome> got = run_together(e, jobs);
    expect_same(got, alone);
    EXPECT_NE(got[0].tokens, got[1].tokens);  // their own seeds
    const int64_t blocks = (total - 1) / 16 * 16;
    EXPECT_EQ(jobs[0]->cached_tokens.load(), 0);
    for (size_t i = 1; i < jobs.size(); ++i) EXPECT_EQ(jobs[i]->cached_tokens.load(), blocks) << "choice " << i;
    EXPECT_EQ(e.metrics.prefix_cache_hits.value(), 3 * blocks);
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
        expect_same(run_together(e, shared_workload(follow_up)), alone);
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
