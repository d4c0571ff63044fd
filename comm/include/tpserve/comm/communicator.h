// The Communicator seam: the collectives and hand-overs model code needs, over host buffers
// (MpiCommunicator) or device buffers (NcclCommunicator), with every call bounded by a deadline.
// Each call names what it is for ("all-reduce after attention, layer 3"), so a timeout or failure
// says which operation stalled and on whom. This header is free of MPI and CUDA: the engine
// builds against it on machines that have neither.
#pragma once

#include "tpserve/partition/dtype.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

enum class CommOp : uint8_t { all_reduce, all_gather, broadcast, send, recv, barrier };
inline constexpr size_t kCommOps = 6;
std::string_view comm_op_name(CommOp op) noexcept;

// Time and bytes spent in each kind of call since the last reset (for `--verbose`, /metrics and
// the benchmarks' time-in-collectives).
struct CommStats {
    std::array<int64_t, kCommOps> calls{};
    std::array<double, kCommOps> seconds{};
    std::array<int64_t, kCommOps> bytes{};
    double total_seconds() const noexcept;
    void add(CommOp op, double s, int64_t b) noexcept;
};

class Communicator {
public:
    virtual ~Communicator() = default;

    virtual int rank() const noexcept = 0;  // in this group
    virtual int size() const noexcept = 0;
    virtual int world_rank(int group_rank) const = 0;

    // data (count elements of `type`, f32 on the MPI side) summed across the group, in place
    virtual void all_reduce_sum(void* data, int64_t count, DType type, std::string_view what) = 0;
    // every rank's `bytes` of `in`, in rank order, into `out` (size() * bytes)
    virtual void all_gather(const void* in, void* out, int64_t bytes, std::string_view what) = 0;
    virtual void broadcast(void* data, int64_t bytes, int root, std::string_view what) = 0;
    // point to point with a group rank; messages between a pair arrive in the order sent
    virtual void send(const void* data, int64_t bytes, int peer, std::string_view what) = 0;
    virtual void recv(void* data, int64_t bytes, int peer, std::string_view what) = 0;
    virtual void barrier(std::string_view what) = 0;
    // A message of any length to a peer, returning at once (the bytes are kept until taken), so
    // two ranks each sending to the other never wait on each other. Messages between a pair
    // arrive in the order posted; receive_message waits for the next one up to the deadline.
    virtual void post_message(std::vector<uint8_t> message, int peer, std::string_view what) = 0;
    // (`idle`, when given, is called now and then while waiting.)
    virtual std::vector<uint8_t> receive_message(int peer, std::string_view what,
                                                 const std::function<void()>& idle = {}) = 0;
    // Waits until every posted message has been taken (before shutting down).
    virtual void flush_posted(std::string_view what) = 0;
    // "tp group of stage 1 (ranks 2, 3)": how messages name this group
    virtual std::string name() const = 0;
    // Whether the data calls take device memory (NCCL) rather than host memory (MPI).
    virtual bool device_buffers() const noexcept { return false; }
    // Polls `ready` until it returns true, giving up after deadline_seconds() with a CommError
    // naming `op`, `what` and this group. A communicator built on this one (NCCL) waits through
    // it, so MPI groups keep answering their peers' liveness probes meanwhile and, on a timeout,
    // name the ranks that stopped answering.
    virtual void wait_until(const std::function<bool()>& ready, std::string_view op, std::string_view what);
    // How long one call may wait.
    virtual double deadline_seconds() const noexcept;

    const CommStats& stats() const noexcept { return stats_; }
    void reset_stats() noexcept { stats_ = {}; }

protected:
    // Adds the call's time and bytes to stats_ when it goes out of scope.
    class CallTimer {
    public:
        CallTimer(Communicator& c, CommOp op, int64_t bytes) noexcept
            : c_(c), op_(op), bytes_(bytes), start_(std::chrono::steady_clock::now()) {}
        ~CallTimer() {
            c_.stats_.add(op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), bytes_);
        }
        CallTimer(const CallTimer&) = delete;
        CallTimer& operator=(const CallTimer&) = delete;

    private:
        Communicator& c_;
        CommOp op_;
        int64_t bytes_;
        std::chrono::steady_clock::time_point start_;
    };

    CommStats stats_;
};

// How long any one call may wait before the rank gives up and says so (default 60 s).
inline constexpr double kDefaultDeadlineSeconds = 60.0;

// The control channel: rank 0 posts step descriptors to every other rank, in order, without
// waiting for any of them to take it (so several steps can be in flight); the others receive
// them one by one. Rank 0 sends a keep-alive when it has nothing to say, so a worker that hears
// nothing for a whole deadline knows rank 0 is gone and says so instead of waiting for ever.
class ControlChannel {
public:
    virtual ~ControlChannel() = default;
    virtual void post(std::vector<uint8_t> message) = 0;  // rank 0
    virtual std::vector<uint8_t> receive() = 0;           // other ranks; waits up to the deadline
    // rank 0, whenever it has nothing to post, at least every few seconds: sends the keep-alive
    // when due and answers other ranks' liveness probes
    virtual void tick() = 0;
    // rank 0: waits until every posted message has been taken (before shutting down)
    virtual void flush() = 0;
};

}  // namespace tps
