#include "bench_worker.h"

#include "cli.h"
#include "mpi_session.h"
#include "rank_report.h"
#include "shard_setup.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/driver.h"
#include "tpserve/serve/scheduler.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <condition_variable>
#include <fstream>
#include <map>
#include <random>
#include <thread>

namespace tps::cli {
namespace {

using serve::Clock;
using serve::Job;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// When a job's pieces arrived (taken on the engine thread, at push time).
struct Timing {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Clock::time_point> pieces;
    bool done = false;
};

struct BatchResult {
    int64_t batch = 0;
    double tokens_per_s = 0;
    double time_per_token_s = 0;
    double wall_s = 0;
    std::vector<RankReport> before, after;
};

// Runs `batch` sequences of the workload through a fresh scheduler; returns when all are done.
// Prompts are seeded random token ids (what they say does not matter, only their length).
std::vector<std::shared_ptr<Timing>> run_batch(Driver& driver, const Tokenizer& tok, const Plan& plan, int64_t batch,
                                               int64_t prompt_tokens, int64_t decode_tokens, double deadline) {
    serve::MetricsRegistry registry;
    serve::ServeMetrics metrics(registry);
    serve::SchedulerOptions so;
    so.max_batch = batch;
    so.max_queue = batch;
    so.step_tokens = plan.serving.prefill_chunk;
    so.context = plan.serving.max_context;
    so.micro_batches = static_cast<int>(plan.stages.size());
    so.request_timeout = 86400;
    serve::Scheduler scheduler(driver, tok, so, metrics);
    std::mt19937_64 rng(static_cast<uint64_t>(batch) * 7919 + static_cast<uint64_t>(prompt_tokens));
    std::vector<std::shared_ptr<Job>> jobs;
    std::vector<std::shared_ptr<Timing>> timings;
    for (int64_t i = 0; i < batch; ++i) {
        serve::GenerationRequest r;
        for (int64_t k = 0; k < prompt_tokens; ++k) r.prompt.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(tok.vocab_size())));
        r.max_tokens = decode_tokens;
        r.sampling.temperature = 0;
        r.logprobs = 0;  // every token travels with its piece
        auto job = std::make_shared<Job>(std::move(r));
        auto t = std::make_shared<Timing>();
        job->set_notify([t, j = job.get()] {
            std::lock_guard lock(t->mu);
            t->pieces.push_back(Clock::now());
            t->done = j->finished();
            t->cv.notify_all();
        });
        jobs.push_back(job);
        timings.push_back(t);
    }
    for (auto& job : jobs) {
        TPS_CHECK(scheduler.submit(job) == serve::Scheduler::Admission::accepted, "bench: the scheduler refused a job");
    }
    std::mutex failure_mu;
    std::exception_ptr failure;
    std::atomic<bool> failed{false};
    std::thread loop([&] {
        try {
            scheduler.run();
        } catch (...) {
            {
                std::lock_guard lock(failure_mu);
                failure = std::current_exception();
            }
            failed = true;
            for (auto& t : timings) {
                std::lock_guard lock(t->mu);
                t->cv.notify_all();
            }
        }
    });
    {
        // the loop stops and is joined however this block is left
        struct Join {
            serve::Scheduler& s;
            std::thread& t;
            ~Join() {
                s.stop();
                t.join();
            }
        } join{scheduler, loop};
        for (auto& t : timings) {
            std::unique_lock lock(t->mu);
            const bool finished = t->cv.wait_for(lock, std::chrono::duration<double>(deadline * 10), [&] { return t->done || failed.load(); });
            if (!finished) break;
        }
    }
    if (failed) {
        std::lock_guard lock(failure_mu);
        std::rethrow_exception(failure);
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
        for (const auto& d : jobs[i]->take()) {
            TPS_CHECK(!d.error, "bench: a sequence failed: {}", d.error ? d.error->what() : "");
        }
        TPS_CHECK(timings[i]->done, "bench: a sequence did not finish");
    }
    return timings;
}

nlohmann::json rank_json(const RankReport& before, const RankReport& after, double wall) {
    const double step = after.step_seconds - before.step_seconds;
    const double comm = after.collective_seconds - before.collective_seconds;
    return {{"rank", after.rank},
            {"stage", after.stage},
            {"compute_s", std::max(0.0, step - comm)},
            {"collective_s", comm},
            {"idle_s", std::max(0.0, wall - step)},
            {"idle_fraction", wall > 0 ? std::clamp(1.0 - step / wall, 0.0, 1.0) : 0.0}};
}

}  // namespace

int run_bench_worker(const BenchWorkerSettings& s) {
    TPS_CHECK_AS(UsageError, launched_by_mpi(), "bench --worker runs under mpirun (tpserve bench starts it)");
    MpiWorld& mpi = mpi_world();
    mpi.set_deadline(s.deadline);
    const int rank = mpi.rank();
    ShardRequest req;
    req.model_path = s.model_path;
    if (!s.format.empty()) req.format = parse_dtype(s.format);
    req.cuda = s.cuda;
    req.plan_file = s.plan_file;
    req.threads = s.threads;
    req.startup_deadline = std::min(86400.0, std::max(600.0, 10 * s.deadline));
    const std::unique_ptr<Shard> shard = load_shard(mpi, req);
    shard->reset_comm_stats();
    const auto mine = [&] { return own_report(*shard); };
    if (rank != 0) {
        run_worker(*shard->model, *shard->links, *shard->control, [&] { return encode_report(mine()); });
    } else {
        Driver driver(*shard->model, &*shard->links, shard->control.get());
        const Plan& plan = shard->plan;
        const Tokenizer& tok = *shard->files.tokenizer;
        auto gather = [&] {
            std::vector<RankReport> out;
            for (const auto& bytes : driver.gather_reports(encode_report(mine()))) out.push_back(decode_report(bytes));
            return out;
        };
        nlohmann::json result;
        const BenchWorkload& w = s.workload;
        // prefill: one prompt alone, to its first token (best of three, after a warm-up)
        run_batch(driver, tok, plan, 1, w.prompt_tokens, 2, s.deadline);
        double prefill = 1e30;
        for (int i = 0; i < 3; ++i) {
            const auto t0 = Clock::now();
            const auto t = run_batch(driver, tok, plan, 1, w.prompt_tokens, 1, s.deadline);
            prefill = std::min(prefill, seconds(t[0]->pieces.front() - t0));
        }
        result["prefill_s"] = prefill;
        result["batches"] = nlohmann::json::array();
        for (const int64_t batch : w.batches) {
            const std::vector<RankReport> before = gather();
            const auto t0 = Clock::now();
            const auto timings = run_batch(driver, tok, plan, batch, w.prompt_tokens, w.decode_tokens, s.deadline);
            const double wall = seconds(Clock::now() - t0);
            const std::vector<RankReport> after = gather();
            // each sequence's time per output token, from its first token to its last
            double tpot = 0;
            for (const auto& t : timings) {
                TPS_CHECK(t->pieces.size() >= 2, "bench: a sequence of {} tokens came back in {} pieces", w.decode_tokens,
                          t->pieces.size());
                tpot += seconds(t->pieces.back() - t->pieces.front()) / static_cast<double>(w.decode_tokens - 1);
            }
            tpot /= static_cast<double>(timings.size());
            nlohmann::json b = {{"batch", batch},
                                {"tokens_per_s", static_cast<double>(batch) / tpot},
                                {"time_per_token_s", tpot},
                                {"wall_s", wall},
                                {"ranks", nlohmann::json::array()}};
            for (size_t r = 0; r < after.size(); ++r) b["ranks"].push_back(rank_json(before.at(r), after[r], wall));
            result["batches"].push_back(std::move(b));
        }
        result["memory"] = nlohmann::json::array();
        for (const auto& r : gather()) {
            const MemoryBytes& p = plan.per_rank.at(static_cast<size_t>(r.rank)).bytes;
            result["memory"].push_back({{"rank", r.rank},
                                        {"stage", r.stage},
                                        {"actual", {{"weights", r.actual.weights}, {"kv_cache", r.actual.kv_cache},
                                                    {"activations", r.actual.activations}, {"total", r.actual.total()}}},
                                        {"predicted", {{"weights", p.weights}, {"kv_cache", p.kv_cache},
                                                       {"activations", p.activations}, {"total", p.total()}}}});
        }
        driver.shutdown();
        std::ofstream out(s.result_file);
        TPS_CHECK_AS(UsageError, out.good(), "--result: cannot write '{}'", s.result_file);
        out << result.dump(2) << '\n';
    }
    shard->world->flush_posted("the last messages to rank 0");
    shard->world->barrier("the end of the run");
    return kExitOk;
}

}  // namespace tps::cli
