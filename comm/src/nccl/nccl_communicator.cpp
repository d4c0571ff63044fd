#include "tpserve/comm/nccl_communicator.h"

#include "tpserve/common/check.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define TPS_CHECK_CUDA(stmt) \
    TPS_CHECK_STATUS_(::tps::ErrorKind::device, "CUDA", stmt, tps_status_ == cudaSuccess, ::cudaGetErrorString)
// ncclInProgress is not a failure of a non-blocking communicator: the call goes on in the background
#define TPS_CHECK_NCCL(stmt)                                                                                    \
    TPS_CHECK_STATUS_(::tps::ErrorKind::comm, "NCCL", stmt, tps_status_ == ncclSuccess || tps_status_ == ncclInProgress, \
                      ::ncclGetErrorString)

namespace tps {
namespace {

ncclDataType_t nccl_type(DType t) {
    switch (t) {
        case DType::f32: return ncclFloat32;
        case DType::f16: return ncclFloat16;
        case DType::bf16: return ncclBfloat16;
        case DType::f64: return ncclFloat64;
        case DType::i32: return ncclInt32;
        case DType::i64: return ncclInt64;
        default: break;
    }
    throw UsageError(fmt::format("NCCL all-reduce: element type {} is not supported", dtype_name(t)));
}

class NcclCommunicator;

// A collective queued on the stream, not yet waited for.
struct Queued {
    NcclCommunicator* comm = nullptr;
    CommOp op = CommOp::barrier;
    int peer = -1;
    int64_t bytes = 0;
    cudaEvent_t start = nullptr, end = nullptr;  // recorded around it
    std::string what;
};

}  // namespace

struct NcclQueue::Impl {
    cudaStream_t stream = nullptr;
    std::vector<NcclCommunicator*> comms;
    std::vector<Queued> queued;
    std::vector<std::pair<cudaEvent_t, cudaEvent_t>> spare;  // event pairs to use again

    std::pair<cudaEvent_t, cudaEvent_t> events() {
        if (!spare.empty()) {
            const auto e = spare.back();
            spare.pop_back();
            return e;
        }
        std::pair<cudaEvent_t, cudaEvent_t> e{};
        TPS_CHECK_CUDA(cudaEventCreate(&e.first));
        const cudaError_t second = cudaEventCreate(&e.second);
        if (second != cudaSuccess) cudaEventDestroy(e.first);
        TPS_CHECK_CUDA(second);
        return e;
    }
    void recycle(const Queued& q) { spare.emplace_back(q.start, q.end); }
    void abort_all() noexcept;
};

namespace {

class NcclCommunicator final : public Communicator {
public:
    NcclCommunicator(Communicator& over, int device, void* stream, NcclQueue* queue)
        : over_(over), device_(device), queue_(queue ? &queue->impl() : nullptr) {
        name_ = "NCCL " + over_.name();
        TPS_CHECK_AS(UsageError, !queue_ || (stream && queue_->stream == static_cast<cudaStream_t>(stream)),
                     "{}: a queued communicator runs on its queue's stream", name_);
        try {
            TPS_CHECK_CUDA(cudaSetDevice(device_));
            if (stream) {
                stream_ = static_cast<cudaStream_t>(stream);
            } else {
                TPS_CHECK_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
                own_stream_ = true;
            }
            TPS_CHECK_CUDA(cudaMalloc(&scratch_, sizeof(float)));
            ncclUniqueId id{};
            if (over_.rank() == 0) TPS_CHECK_NCCL(ncclGetUniqueId(&id));
            over_.broadcast(&id, sizeof id, 0, "the NCCL id");
            ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
            config.blocking = 0;
            TPS_CHECK_NCCL(ncclCommInitRankConfig(&comm_, over_.size(), id, over_.rank(), &config));
            settle("NCCL start-up");
            if (queue_) queue_->comms.push_back(this);
        } catch (...) {
            release(/*orderly=*/false);
            throw;
        }
    }

    ~NcclCommunicator() override { release(std::uncaught_exceptions() == 0); }

    int rank() const noexcept override { return over_.rank(); }
    int size() const noexcept override { return over_.size(); }
    int world_rank(int group_rank) const override { return over_.world_rank(group_rank); }
    std::string name() const override { return name_; }
    bool device_buffers() const noexcept override { return true; }

    void all_reduce_sum(void* data, int64_t count, DType type, std::string_view what) override {
        const ncclDataType_t t = nccl_type(type);
        run(CommOp::all_reduce, count * dtype_layout(type).block_bits / 8, what, -1, [&] {
            TPS_CHECK_NCCL(ncclAllReduce(data, data, static_cast<size_t>(count), t, ncclSum, comm_, stream_));
        });
    }
    void all_gather(const void* in, void* out, int64_t bytes, std::string_view what) override {
        run(CommOp::all_gather, bytes * size(), what, -1, [&] {
            TPS_CHECK_NCCL(ncclAllGather(in, out, static_cast<size_t>(bytes), ncclUint8, comm_, stream_));
        });
    }
    void broadcast(void* data, int64_t bytes, int root, std::string_view what) override {
        run(CommOp::broadcast, bytes, what, -1, [&] {
            TPS_CHECK_NCCL(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_));
        });
    }
    void send(const void* data, int64_t bytes, int peer, std::string_view what) override {
        run(CommOp::send, bytes, what, peer, [&] {
            TPS_CHECK_NCCL(ncclSend(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream_));
        });
    }
    void recv(void* data, int64_t bytes, int peer, std::string_view what) override {
        run(CommOp::recv, bytes, what, peer, [&] {
            TPS_CHECK_NCCL(ncclRecv(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream_));
        });
    }
    void barrier(std::string_view what) override {
        run(CommOp::barrier, 0, what, -1, [&] {
            TPS_CHECK_NCCL(ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
        });
    }
    // host messages travel over the group this one is built on
    void post_message(std::vector<uint8_t> message, int peer, std::string_view what) override {
        over_.post_message(std::move(message), peer, what);
    }
    std::vector<uint8_t> receive_message(int peer, std::string_view what, const std::function<void()>& idle) override {
        return over_.receive_message(peer, what, idle);
    }
    void flush_posted(std::string_view what) override { over_.flush_posted(what); }

    // (NcclQueue::wait) Waits for a collective this communicator queued, under the deadline;
    // adds its device time to the statistics.
    void await(const Queued& q) {
        auto done = [&] {
            const cudaError_t s = cudaEventQuery(q.end);
            if (s == cudaErrorNotReady) {
                check_async(q.op, q.what);
                return false;
            }
            TPS_CHECK_CUDA(s);
            return true;
        };
        guarded([&] { over_.wait_until(done, op_name(q.op, q.peer), q.what); });
        float ms = 0;
        TPS_CHECK_CUDA(cudaEventElapsedTime(&ms, q.start, q.end));
        stats_.add(q.op, ms / 1e3, q.bytes);
    }

    // (NcclQueue: another collective on the stream failed) Ends this communicator's kernels.
    void abort() noexcept {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
    }

private:
    int my_world_rank() const { return over_.world_rank(over_.rank()); }

    // Queues the call's work (`enqueue`) and waits for it, or, with a queue, leaves it there
    // between two events.
    template <class F>
    void run(CommOp op, int64_t bytes, std::string_view what, int peer, F&& enqueue) {
        if (!queue_) {
            const CallTimer t(*this, op, bytes);
            enqueue();
            finish(op, what, peer);
            return;
        }
        TPS_CHECK_AS(CommError, comm_ != nullptr, "rank {}: {} ({}) in {}: the communicator was aborted",
                     my_world_rank(), comm_op_name(op), what, name_);
        Queued q{this, op, peer, bytes, nullptr, nullptr, std::string(what)};
        std::tie(q.start, q.end) = queue_->events();
        try {
            TPS_CHECK_CUDA(cudaEventRecord(q.start, stream_));
            enqueue();
            // (the call itself may still be in progress on a non-blocking communicator)
            settle(what, op_name(op, peer));
            TPS_CHECK_CUDA(cudaEventRecord(q.end, stream_));
        } catch (...) {
            queue_->recycle(q);
            queue_->abort_all();  // what is queued before it would be waited for in vain
            throw;
        }
        queue_->queued.push_back(std::move(q));
    }

    std::string op_name(CommOp op, int peer) const {
        return peer >= 0 ? fmt::format("{} {} rank {}", comm_op_name(op), op == CommOp::send ? "to" : "from",
                                       world_rank(peer))
                         : std::string(comm_op_name(op));
    }

    // NCCL's asynchronous error, if any, as a CommError naming the operation waited for.
    void check_async(CommOp op, std::string_view what) {
        ncclResult_t state = ncclSuccess;
        TPS_CHECK_NCCL(ncclCommGetAsyncError(comm_, &state));
        TPS_CHECK_AS(CommError, state == ncclSuccess || state == ncclInProgress, "rank {}: {} ({}) in {}: NCCL error '{}'",
                     my_world_rank(), comm_op_name(op), what, name_, ncclGetErrorString(state));
    }

    // A non-blocking communicator's calls may still be in progress after they return.
    // (`op`: what a stall names, the call being issued, or NCCL's set-up before the first one)
    void settle(std::string_view what, std::string_view op = "NCCL set-up") {
        auto done = [&] {
            ncclResult_t state = ncclSuccess;
            TPS_CHECK_NCCL(ncclCommGetAsyncError(comm_, &state));
            TPS_CHECK_AS(CommError, state == ncclSuccess || state == ncclInProgress, "rank {}: {} ({}) in {}: NCCL error '{}'",
                         my_world_rank(), op, what, name_, ncclGetErrorString(state));
            return state == ncclSuccess;
        };
        guarded([&] { over_.wait_until(done, op, what); });
    }

    // Waits for the stream with the deadline, watching NCCL's asynchronous errors.
    void finish(CommOp op, std::string_view what, int peer = -1) {
        settle(what, op_name(op, peer));
        auto done = [&] {
            const cudaError_t s = cudaStreamQuery(stream_);
            if (s == cudaErrorNotReady) {
                check_async(op, what);
                return false;
            }
            TPS_CHECK_CUDA(s);
            return true;
        };
        guarded([&] { over_.wait_until(done, op_name(op, peer), what); });
    }

    // On any failure the communicator is aborted: its kernels may never finish otherwise.
    template <class F>
    void guarded(F&& f) {
        try {
            f();
        } catch (...) {
            if (comm_) {
                ncclCommAbort(comm_);
                comm_ = nullptr;
            }
            throw;
        }
    }

    // Orderly: finalize (polled, with the deadline) then destroy; otherwise, or when finalizing
    // fails, abort, which never waits on the peers.
    void release(bool orderly) noexcept {
        if (queue_) {
            // Work still queued means a step was left without its wait: every communicator of the
            // queue is aborted, since finalizing this one, or the cudaFree below, would wait behind
            // another's collective with no deadline.
            if (!queue_->queued.empty()) queue_->abort_all();
            std::erase(queue_->comms, this);
            for (const Queued& q : queue_->queued) {
                if (q.comm == this) queue_->recycle(q);
            }
            std::erase_if(queue_->queued, [&](const Queued& q) { return q.comm == this; });
        }
        if (comm_) {
            bool finalized = false;
            if (orderly) {
                const ncclResult_t r = ncclCommFinalize(comm_);
                ncclResult_t state = r;
                const auto start = std::chrono::steady_clock::now();
                while (state == ncclInProgress &&
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < over_.deadline_seconds()) {
                    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
                }
                finalized = state == ncclSuccess;
            }
            if (finalized) {
                ncclCommDestroy(comm_);
            } else {
                ncclCommAbort(comm_);
            }
            comm_ = nullptr;
        }
        if (scratch_) cudaFree(scratch_);
        scratch_ = nullptr;
        if (own_stream_) cudaStreamDestroy(stream_);
        own_stream_ = false;
    }

    Communicator& over_;
    int device_ = 0;
    NcclQueue::Impl* queue_ = nullptr;
    cudaStream_t stream_ = nullptr;
    bool own_stream_ = false;
    void* scratch_ = nullptr;
    ncclComm_t comm_ = nullptr;
    std::string name_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& over, int device, void* stream, NcclQueue* queue) {
    return std::make_unique<NcclCommunicator>(over, device, stream, queue);
}

void NcclQueue::Impl::abort_all() noexcept {
    for (NcclCommunicator* c : comms) c->abort();
    for (const Queued& q : queued) recycle(q);
    queued.clear();
}

NcclQueue::NcclQueue(void* stream) : impl_(std::make_unique<Impl>()) {
    TPS_CHECK_AS(UsageError, stream != nullptr, "an NCCL queue needs a stream");
    impl_->stream = static_cast<cudaStream_t>(stream);
}

NcclQueue::~NcclQueue() {
    // (its communicators, which record into it, are gone first; one left is aborted)
    impl_->abort_all();
    for (const auto& [a, b] : impl_->spare) {
        cudaEventDestroy(a);
        cudaEventDestroy(b);
    }
}

size_t NcclQueue::queued() const noexcept { return impl_->queued.size(); }

void NcclQueue::wait() {
    Impl& q = *impl_;
    try {
        // in issue order: the first that does not complete is the one that stalled
        for (const Queued& c : q.queued) c.comm->await(c);
    } catch (...) {
        q.abort_all();  // the rest would wait on kernels that may never finish
        throw;
    }
    for (const Queued& c : q.queued) q.recycle(c);
    q.queued.clear();
    // what follows the last collective is the device's own work
    TPS_CHECK_CUDA(cudaStreamSynchronize(q.stream));
}

DeviceBuffer::DeviceBuffer(int device, int64_t bytes) {
    TPS_CHECK_CUDA(cudaSetDevice(device));
    TPS_CHECK_CUDA(cudaMalloc(&data_, static_cast<size_t>(bytes)));
    TPS_CHECK_CUDA(cudaMemset(data_, 0, static_cast<size_t>(bytes)));
}

DeviceBuffer::~DeviceBuffer() {
    if (data_) cudaFree(data_);
}

bool nccl_built() noexcept { return true; }

int cuda_device_count() noexcept {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

}  // namespace tps
