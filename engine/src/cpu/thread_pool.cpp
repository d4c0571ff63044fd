#include "thread_pool.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <system_error>
#include <immintrin.h>

namespace tps::cpu {
namespace {
// Waiting is spin, then yield, then sleep: spinning makes a dispatch cost about a microsecond
// when every thread has a core, yielding keeps it from costing a scheduler time slice when the
// machine is oversubscribed (more runnable threads than cores), sleeping stops an idle pool from
// burning a core.
constexpr int kSpins = 1 << 10;
constexpr int kYields = 1 << 8;

template <class Done>
void wait_until(Done done) {
    for (int i = 0; i < kSpins; ++i) {
        if (done()) return;
        _mm_pause();
    }
    while (!done()) std::this_thread::yield();
}
}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) {
    try {
        for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
    } catch (const std::system_error& e) {
        stop_workers();
        throw Error(fmt::format("cannot start {} CPU threads: {}", threads_, e.what()));
    }
}

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::run_chunks() {
    while (true) {
        const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
        if (begin >= n_) break;
        const int64_t end = std::min(n_, begin + chunk_);
        try {
            (*body_)(begin, end);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!error_) error_ = std::current_exception();
            next_.store(n_, std::memory_order_relaxed);  // stop handing out work
        }
    }
}

void ThreadPool::worker(int) {
    uint64_t seen = 0;
    while (true) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        for (int spin = 0; gen == seen && spin < kSpins; ++spin) {
            _mm_pause();
            gen = generation_.load(std::memory_order_acquire);
        }
        for (int y = 0; gen == seen && y < kYields; ++y) {
            std::this_thread::yield();
            gen = generation_.load(std::memory_order_acquire);
        }
        if (gen == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleeping_.fetch_add(1);
            wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            sleeping_.fetch_sub(1);
            gen = generation_.load(std::memory_order_acquire);
        }
        seen = gen;
        if (stop_.load()) return;
        run_chunks();
        active_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body,
                              int chunks_per_thread) {
    if (n <= 0) return;
    grain = std::max<int64_t>(1, grain);
    if (threads_ == 1 || n <= grain) {
        body(0, n);
        return;
    }
    body_ = &body;
    n_ = n;
    const int64_t chunks = static_cast<int64_t>(threads_) * std::max(1, chunks_per_thread);
    chunk_ = std::max(grain, (n + chunks - 1) / chunks);
    next_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    active_.store(threads_ - 1, std::memory_order_release);
    {
        // the lock pairs with a worker that is just going to sleep, so the wake-up is not lost
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    if (sleeping_.load() > 0) wake_.notify_all();
    run_chunks();
    wait_until([&] { return active_.load(std::memory_order_acquire) == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
}

}  // namespace tps::cpu
