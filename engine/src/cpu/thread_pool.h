// A fixed pool of worker threads for the CPU backend. Decode runs a few hundred small parallel
// loops per token, so dispatch must cost about a microsecond: workers spin briefly on a
// generation counter before sleeping on a condition variable, and the calling thread takes a
// share of every loop itself.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tps::cpu {

class ThreadPool {
public:
    explicit ThreadPool(int threads);  // total threads, the caller included
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    ~ThreadPool();

    int size() const noexcept { return threads_; }

    // Calls body(begin, end) over [0, n) in chunks of at least `grain`, about `chunks_per_thread`
    // per thread, on every thread; returns when all chunks are done. The first exception thrown
    // by a body is rethrown here. One chunk per thread suits streaming work of even cost (each
    // thread reads one contiguous range); more chunks balance uneven work.
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body,
                      int chunks_per_thread = 4);

private:
    void worker(int index);
    void stop_workers();
    void run_chunks();

    int threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> sleeping_{0};
    std::atomic<bool> stop_{false};

    // the current job
    const std::function<void(int64_t, int64_t)>* body_ = nullptr;
    int64_t n_ = 0;
    int64_t chunk_ = 1;
    std::atomic<int64_t> next_{0};
    std::atomic<int> active_{0};
    std::exception_ptr error_;
    std::mutex error_mutex_;
};

}  // namespace tps::cpu
