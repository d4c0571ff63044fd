// MpiCommunicator: the Communicator over host buffers, every call nonblocking underneath and
// waited on with the deadline; and MpiWorld's constructors of communicators.
#include "mpi_internal.h"
#include "tpserve/comm/mpi_world.h"
#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <deque>
#include <memory>
#include <thread>
#include <vector>

namespace tps {
namespace {

constexpr int kDataTag = 10;
constexpr int kMessageTag = 11;
constexpr int kRingTag = 12;

// From this size on an all-reduce is our own ring (ring_all_reduce): Open MPI's nonblocking
// all-reduce, which the deadline needs, runs large messages at about half the blocking one's
// speed, and the ring about four times as fast as it at 32 MB (docs/perf.md, "The price of
// tensor parallelism on CPU ranks", which also has the threshold's measurements). Each step
// moves its chunk in segments of at most kRingSegmentBytes, so the ring holds no more than one
// segment of its own.
constexpr int64_t kRingMinBytes = int64_t{1} << 20;
constexpr int64_t kRingSegmentBytes = int64_t{1} << 20;

MPI_Datatype mpi_type(DType t) {
    switch (t) {
        case DType::f32: return MPI_FLOAT;
        case DType::f64: return MPI_DOUBLE;
        case DType::i32: return MPI_INT32_T;
        case DType::i64: return MPI_INT64_T;
        default: break;
    }
    throw UsageError(fmt::format("MPI all-reduce: element type {} is not supported (f32, f64, i32, i64)", dtype_name(t)));
}

class MpiCommunicator final : public Communicator {
public:
    MpiCommunicator(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
        TPS_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
        TPS_CHECK_MPI(MPI_Comm_size(comm_, &size_));
        int me = mpi::runtime().rank;
        world_ranks_.resize(static_cast<size_t>(size_));
        MPI_Request req;
        TPS_CHECK_MPI(MPI_Iallgather(&me, 1, MPI_INT, world_ranks_.data(), 1, MPI_INT, comm_, &req));
        mpi::wait_all(std::span<MPI_Request>(&req, 1), "all-gather", "the ranks of a new group", name_,
                      mpi::runtime().deadline);
        std::vector<std::string> ranks;
        for (int r : world_ranks_) ranks.push_back(std::to_string(r));
        name_ += fmt::format(" (ranks {})", fmt::join(ranks, ", "));
    }
    ~MpiCommunicator() override {
        // a send still in progress may read its buffer later: leave the buffer to the process
        for (auto& p : posted_) {
            if (p.request != MPI_REQUEST_NULL) {
                MPI_Request_free(&p.request);
                (void)p.bytes.release();
            }
        }
        if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    }

    int rank() const noexcept override { return rank_; }
    int size() const noexcept override { return size_; }
    int world_rank(int group_rank) const override { return world_ranks_.at(static_cast<size_t>(group_rank)); }
    std::string name() const override { return name_; }
    void wait_until(const std::function<bool()>& ready, std::string_view op, std::string_view what) override {
        mpi::poll_until(ready, op, what, name_, mpi::runtime().deadline);
    }
    double deadline_seconds() const noexcept override { return mpi::runtime().deadline; }

    void all_reduce_sum(void* data, int64_t count, DType type, std::string_view what) override {
        const CallTimer t(*this, CommOp::all_reduce, count * dtype_layout(type).block_bits / 8);
        if (size_ == 1) return;
        TPS_CHECK_AS(UsageError, count <= INT_MAX, "all-reduce of {} elements: more than MPI can count", count);
        const int64_t bytes = count * dtype_layout(type).block_bits / 8;
        if (bytes >= kRingMinBytes) return ring_all_reduce(data, count, type, what);
        MPI_Request req;
        TPS_CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpi_type(type), MPI_SUM, comm_, &req));
        wait(req, CommOp::all_reduce, what);
    }

    void all_gather(const void* in, void* out, int64_t bytes, std::string_view what) override {
        const CallTimer t(*this, CommOp::all_gather, bytes * size_);
        TPS_CHECK_AS(UsageError, bytes <= INT_MAX, "all-gather of {} bytes per rank: more than MPI can count", bytes);
        MPI_Request req;
        TPS_CHECK_MPI(MPI_Iallgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_, &req));
        wait(req, CommOp::all_gather, what);
    }

    void broadcast(void* data, int64_t bytes, int root, std::string_view what) override {
        const CallTimer t(*this, CommOp::broadcast, bytes);
        check_peer(root, "broadcast root");
        if (size_ == 1) return;
        for (int64_t at = 0; at < bytes; at += INT_MAX) {
            MPI_Request req;
            const auto n = static_cast<int>(std::min<int64_t>(INT_MAX, bytes - at));
            TPS_CHECK_MPI(MPI_Ibcast(static_cast<char*>(data) + at, n, MPI_BYTE, root, comm_, &req));
            wait(req, CommOp::broadcast, what);
        }
    }

    void send(const void* data, int64_t bytes, int peer, std::string_view what) override {
        const CallTimer t(*this, CommOp::send, bytes);
        check_peer(peer, "send to");
        int64_t at = 0;
        do {
            const auto n = static_cast<int>(std::min<int64_t>(INT_MAX, bytes - at));
            MPI_Request req;
            TPS_CHECK_MPI(MPI_Isend(static_cast<const char*>(data) + at, n, MPI_BYTE, peer, kDataTag, comm_, &req));
            wait(req, CommOp::send, what, peer);
            at += n;
        } while (at < bytes);
    }

    void recv(void* data, int64_t bytes, int peer, std::string_view what) override {
        const CallTimer t(*this, CommOp::recv, bytes);
        check_peer(peer, "receive from");
        int64_t at = 0;
        do {
            const auto n = static_cast<int>(std::min<int64_t>(INT_MAX, bytes - at));
            MPI_Request req;
            TPS_CHECK_MPI(MPI_Irecv(static_cast<char*>(data) + at, n, MPI_BYTE, peer, kDataTag, comm_, &req));
            MPI_Status st;
            wait(req, CommOp::recv, what, peer, &st);
            int got = 0;
            TPS_CHECK_MPI(MPI_Get_count(&st, MPI_BYTE, &got));
            TPS_CHECK_AS(CommError, got == n, "rank {}: {} from rank {} in {}: expected {} bytes, received {}",
                         mpi::runtime().rank, what, world_rank(peer), name_, n, got);
            at += n;
        } while (at < bytes);
    }

    void barrier(std::string_view what) override {
        const CallTimer t(*this, CommOp::barrier, 0);
        MPI_Request req;
        TPS_CHECK_MPI(MPI_Ibarrier(comm_, &req));
        wait(req, CommOp::barrier, what);
    }

    void post_message(std::vector<uint8_t> message, int peer, std::string_view what) override {
        const CallTimer t(*this, CommOp::send, static_cast<int64_t>(message.size()));
        check_peer(peer, "send to");
        TPS_CHECK_AS(UsageError, message.size() <= static_cast<size_t>(INT_MAX), "{}: a message of {} bytes is too large",
                     what, message.size());
        reap();
        Posted p{std::make_unique<std::vector<uint8_t>>(std::move(message)), MPI_REQUEST_NULL};
        TPS_CHECK_MPI(MPI_Isend(p.bytes->data(), static_cast<int>(p.bytes->size()), MPI_BYTE, peer, kMessageTag, comm_,
                                &p.request));
        posted_.push_back(std::move(p));
    }

    std::vector<uint8_t> receive_message(int peer, std::string_view what, const std::function<void()>& idle) override {
        const CallTimer t(*this, CommOp::recv, 0);
        check_peer(peer, "receive from");
        reap();
        const std::string op = fmt::format("receive from rank {}", world_rank(peer));
        return mpi::receive_matched(comm_, peer, kMessageTag, op, what, name_, [&] {
            reap();
            if (idle) idle();
        });
    }

    void flush_posted(std::string_view what) override {
        for (auto& p : posted_) {
            mpi::wait_all(std::span<MPI_Request>(&p.request, 1), "send", what, name_, mpi::runtime().deadline);
        }
        posted_.clear();
    }

private:
    struct Posted {
        std::unique_ptr<std::vector<uint8_t>> bytes;
        MPI_Request request;
    };
    void reap() {
        while (!posted_.empty()) {
            int done = 0;
            TPS_CHECK_MPI(MPI_Test(&posted_.front().request, &done, MPI_STATUS_IGNORE));
            if (!done) return;
            posted_.pop_front();
        }
    }
    // A ring over nonblocking sends, each segment waited on with the deadline: the data in
    // `size_` chunks; a reduce-scatter (step s: chunk rank - s to the next rank, chunk
    // rank - s - 1 from the previous one, added in) leaves each rank one chunk's whole sum, and an
    // all-gather passes the sums round. Each rank sends 2 (size - 1) / size of the data, as the
    // blocking algorithms do; each chunk's sum is made on one rank and copied to the others, so
    // all ranks end with the same bits.
    void ring_all_reduce(void* data, int64_t count, DType type, std::string_view what) {
        const MPI_Datatype mt = mpi_type(type);
        const int64_t elem = dtype_layout(type).block_bits / 8;
        const int64_t seg = kRingSegmentBytes / elem;
        const int p = size_, next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
        auto first = [&](int c) { return count * c / p; };  // chunk c: [first(c), first(c + 1))
        auto* base = static_cast<char*>(data);
        ring_in_.resize(static_cast<size_t>(std::min(seg, (count + p - 1) / p) * elem));
        // chunk `out` to the next rank while chunk `in` comes from the previous one, a segment at
        // a time: into ring_in_ and added (`add`), or straight into place
        auto step = [&](int out, int in, bool add) {
            const int64_t n_out = first(out + 1) - first(out), n_in = first(in + 1) - first(in);
            for (int64_t at = 0; at < std::max(n_out, n_in); at += seg) {
                MPI_Request req[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
                const int64_t k_in = std::clamp<int64_t>(n_in - at, 0, seg), k_out = std::clamp<int64_t>(n_out - at, 0, seg);
                char* to = add ? reinterpret_cast<char*>(ring_in_.data()) : base + (first(in) + at) * elem;
                if (k_in > 0) TPS_CHECK_MPI(MPI_Irecv(to, static_cast<int>(k_in), mt, prev, kRingTag, comm_, &req[0]));
                if (k_out > 0) {
                    TPS_CHECK_MPI(MPI_Isend(base + (first(out) + at) * elem, static_cast<int>(k_out), mt, next, kRingTag,
                                            comm_, &req[1]));
                }
                try {
                    mpi::wait_all(req, comm_op_name(CommOp::all_reduce), what, name_, mpi::runtime().deadline);
                } catch (const Error&) {
                    // nothing is to land in ring_in_ or read the caller's data after the error
                    if (req[0] != MPI_REQUEST_NULL) {
                        MPI_Cancel(&req[0]);
                        MPI_Wait(&req[0], MPI_STATUS_IGNORE);
                    }
                    if (req[1] != MPI_REQUEST_NULL) MPI_Request_free(&req[1]);
                    throw;
                }
                if (add && k_in > 0) add_into(type, base + (first(in) + at) * elem, ring_in_.data(), k_in);
            }
        };
        for (int s = 0; s < p - 1; ++s) step((rank_ - s + p) % p, (rank_ - s - 1 + p) % p, true);
        for (int s = 0; s < p - 1; ++s) step((rank_ + 1 - s + p) % p, (rank_ - s + p) % p, false);
    }
    static void add_into(DType type, void* to, const void* from, int64_t n) {
        auto add = [&]<class T>(T*) {
            T* d = static_cast<T*>(to);
            const T* f = static_cast<const T*>(from);
            for (int64_t i = 0; i < n; ++i) d[i] += f[i];
        };
        switch (type) {
            case DType::f32: return add(static_cast<float*>(nullptr));
            case DType::f64: return add(static_cast<double*>(nullptr));
            case DType::i32: return add(static_cast<int32_t*>(nullptr));
            case DType::i64: return add(static_cast<int64_t*>(nullptr));
            default: break;
        }
        throw UsageError(fmt::format("MPI all-reduce: element type {} is not supported", dtype_name(type)));
    }
    void check_peer(int peer, std::string_view role) const {
        TPS_CHECK(peer >= 0 && peer < size_, "{} rank {} outside {}", role, peer, name_);
    }
    void wait(MPI_Request& req, CommOp op, std::string_view what, int peer = -1, MPI_Status* status = MPI_STATUS_IGNORE) {
        int done = 0;
        TPS_CHECK_MPI(MPI_Test(&req, &done, status));
        if (done) return;
        const std::string op_name =
            peer >= 0 ? fmt::format("{} {} rank {}", comm_op_name(op), op == CommOp::send ? "to" : "from", world_rank(peer))
                      : std::string(comm_op_name(op));
        mpi::wait_all(std::span<MPI_Request>(&req, 1), op_name, what, name_, mpi::runtime().deadline, status);
    }

    MPI_Comm comm_ = MPI_COMM_NULL;
    std::string name_;
    int rank_ = 0;
    int size_ = 1;
    std::vector<int> world_ranks_;
    std::deque<Posted> posted_;
    std::vector<std::byte> ring_in_;  // a chunk from the previous rank (ring_all_reduce)
};

// Rank 0 posts each message to every other rank with MPI_Isend and keeps the buffer until all
// have taken it; the others probe for the next message with the deadline. An empty message is a
// keep-alive.
class MpiControl final : public ControlChannel {
public:
    explicit MpiControl(MPI_Comm comm) : comm_(comm) {
        TPS_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
        TPS_CHECK_MPI(MPI_Comm_size(comm_, &size_));
    }
    ~MpiControl() override {
        // sends still in progress may read their buffers later: leave those to the process
        for (auto& p : pending_) {
            bool active = false;
            for (auto& r : p.requests) {
                if (r != MPI_REQUEST_NULL) {
                    MPI_Request_free(&r);
                    active = true;
                }
            }
            if (active) (void)p.bytes.release();
        }
        if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
    }

    void post(std::vector<uint8_t> message) override {
        TPS_CHECK(rank_ == 0, "only rank 0 posts on the control channel");
        TPS_CHECK_AS(UsageError, message.size() <= static_cast<size_t>(INT_MAX), "control message of {} bytes: too large",
                     message.size());
        reap();
        Pending p;
        p.bytes = std::make_unique<std::vector<uint8_t>>(std::move(message));
        for (int r = 1; r < size_; ++r) {
            MPI_Request req;
            TPS_CHECK_MPI(MPI_Isend(p.bytes->data(), static_cast<int>(p.bytes->size()), MPI_BYTE, r, kControlTag, comm_, &req));
            p.requests.push_back(req);
        }
        pending_.push_back(std::move(p));
        last_post_ = std::chrono::steady_clock::now();
    }

    void tick() override {
        if (rank_ != 0) return;
        mpi::service_probes();
        reap();
        const double quiet = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_post_).count();
        if (quiet > mpi::runtime().deadline / 4) post({});
    }

    std::vector<uint8_t> receive() override {
        TPS_CHECK(rank_ != 0, "rank 0 does not receive on the control channel");
        for (;;) {
            auto out = mpi::receive_matched(comm_, 0, kControlTag, "receive from rank 0", "the next step descriptor",
                                            "the control channel", {});
            if (!out.empty()) return out;  // else a keep-alive: the deadline starts again
        }
    }

    void flush() override {
        for (auto& p : pending_) {
            mpi::wait_all(p.requests, "send to every rank", "a step descriptor", "the control channel",
                          mpi::runtime().deadline);
        }
        pending_.clear();
    }

private:
    static constexpr int kControlTag = 20;
    struct Pending {
        std::unique_ptr<std::vector<uint8_t>> bytes;
        std::vector<MPI_Request> requests;
    };
    void reap() {
        while (!pending_.empty()) {
            int done = 0;
            auto& reqs = pending_.front().requests;
            TPS_CHECK_MPI(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE));
            if (!done) return;
            pending_.pop_front();
        }
    }

    MPI_Comm comm_ = MPI_COMM_NULL;
    int rank_ = 0;
    int size_ = 1;
    std::deque<Pending> pending_;
    std::chrono::steady_clock::time_point last_post_ = std::chrono::steady_clock::now();
};

}  // namespace

namespace {

// A copy of the world communicator, made with the deadline (MPI_Comm_idup).
MPI_Comm dup_world(std::string_view what) {
    MPI_Comm c;
    MPI_Request req;
    TPS_CHECK_MPI(MPI_Comm_idup(MPI_COMM_WORLD, &c, &req));
    mpi::wait_all(std::span<MPI_Request>(&req, 1), "communicator copy", what, "the world", mpi::runtime().deadline);
    return c;
}

}  // namespace

std::unique_ptr<Communicator> MpiWorld::world(std::string name) {
    MPI_Comm c = dup_world(name);
    return std::make_unique<MpiCommunicator>(c, std::move(name));
}

std::unique_ptr<Communicator> MpiWorld::split(int color, int key, std::string name) {
    // MPI_Comm_split has no nonblocking form: a barrier with the deadline first, so a missing
    // rank is found here rather than waited for inside the split
    MPI_Request req;
    TPS_CHECK_MPI(MPI_Ibarrier(MPI_COMM_WORLD, &req));
    mpi::wait_all(std::span<MPI_Request>(&req, 1), "barrier", "before making " + name, "the world", mpi::runtime().deadline);
    MPI_Comm c;
    TPS_CHECK_MPI(MPI_Comm_split(MPI_COMM_WORLD, color < 0 ? MPI_UNDEFINED : color, key, &c));
    if (c == MPI_COMM_NULL) return nullptr;
    return std::make_unique<MpiCommunicator>(c, std::move(name));
}

std::unique_ptr<ControlChannel> MpiWorld::control() {
    return std::make_unique<MpiControl>(dup_world("the control channel"));
}

}  // namespace tps
