#include "tpserve/comm/nccl_communicator.h"

#include "tpserve/common/check.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <chrono>
#include <exception>

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

class NcclCommunicator final : public Communicator {
public:
    NcclCommunicator(Communicator& over, int device, void* stream) : over_(over), device_(device) {
        name_ = "NCCL " + over_.name();
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
        const CallTimer t(*this, CommOp::all_reduce, count * dtype_layout(type).block_bits / 8);
        TPS_CHECK_NCCL(ncclAllReduce(data, data, static_cast<size_t>(count), nccl_type(type), ncclSum, comm_, stream_));
        finish(CommOp::all_reduce, what);
    }
    void all_gather(const void* in, void* out, int64_t bytes, std::string_view what) override {
        const CallTimer t(*this, CommOp::all_gather, bytes * size());
        TPS_CHECK_NCCL(ncclAllGather(in, out, static_cast<size_t>(bytes), ncclUint8, comm_, stream_));
        finish(CommOp::all_gather, what);
    }
    void broadcast(void* data, int64_t bytes, int root, std::string_view what) override {
        const CallTimer t(*this, CommOp::broadcast, bytes);
        TPS_CHECK_NCCL(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, comm_, stream_));
        finish(CommOp::broadcast, what);
    }
    void send(const void* data, int64_t bytes, int peer, std::string_view what) override {
        const CallTimer t(*this, CommOp::send, bytes);
        TPS_CHECK_NCCL(ncclSend(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream_));
        finish(CommOp::send, what, peer);
    }
    void recv(void* data, int64_t bytes, int peer, std::string_view what) override {
        const CallTimer t(*this, CommOp::recv, bytes);
        TPS_CHECK_NCCL(ncclRecv(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_, stream_));
        finish(CommOp::recv, what, peer);
    }
    void barrier(std::string_view what) override {
        const CallTimer t(*this, CommOp::barrier, 0);
        TPS_CHECK_NCCL(ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
        finish(CommOp::barrier, what);
    }
    // host messages travel over the group this one is built on
    void post_message(std::vector<uint8_t> message, int peer, std::string_view what) override {
        over_.post_message(std::move(message), peer, what);
    }
    std::vector<uint8_t> receive_message(int peer, std::string_view what, const std::function<void()>& idle) override {
        return over_.receive_message(peer, what, idle);
    }
    void flush_posted(std::string_view what) override { over_.flush_posted(what); }

private:
    int my_world_rank() const { return over_.world_rank(over_.rank()); }

    // A non-blocking communicator's calls may still be in progress after they return.
    void settle(std::string_view what) {
        auto done = [&] {
            ncclResult_t state = ncclSuccess;
            TPS_CHECK_NCCL(ncclCommGetAsyncError(comm_, &state));
            TPS_CHECK_AS(CommError, state == ncclSuccess || state == ncclInProgress, "rank {}: {} in {}: NCCL error '{}'",
                         my_world_rank(), what, name_, ncclGetErrorString(state));
            return state == ncclSuccess;
        };
        guarded([&] { over_.wait_until(done, "NCCL set-up", what); });
    }

    // Waits for the stream with the deadline, watching NCCL's asynchronous errors.
    void finish(CommOp op, std::string_view what, int peer = -1) {
        settle(what);
        auto done = [&] {
            const cudaError_t s = cudaStreamQuery(stream_);
            if (s == cudaErrorNotReady) {
                ncclResult_t state = ncclSuccess;
                TPS_CHECK_NCCL(ncclCommGetAsyncError(comm_, &state));
                TPS_CHECK_AS(CommError, state == ncclSuccess || state == ncclInProgress,
                             "rank {}: {} ({}) in {}: NCCL error '{}'", my_world_rank(), comm_op_name(op), what,
                             name_, ncclGetErrorString(state));
                return false;
            }
            TPS_CHECK_CUDA(s);
            return true;
        };
        const std::string op_name = peer >= 0 ? fmt::format("{} {} rank {}", comm_op_name(op),
                                                            op == CommOp::send ? "to" : "from", world_rank(peer))
                                              : std::string(comm_op_name(op));
        guarded([&] { over_.wait_until(done, op_name, what); });
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
    cudaStream_t stream_ = nullptr;
    bool own_stream_ = false;
    void* scratch_ = nullptr;
    ncclComm_t comm_ = nullptr;
    std::string name_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& over, int device, void* stream) {
    return std::make_unique<NcclCommunicator>(over, device, stream);
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
