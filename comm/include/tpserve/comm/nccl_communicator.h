// NcclCommunicator: the Communicator over device buffers, for the ranks of one group. The NCCL id
// is made on the group's first rank and broadcast over `over` (the same group's host
// communicator: MpiCommunicator under mpirun, which also carries post_message and
// receive_message). The communicator is non-blocking: every call is enqueued on the rank's stream
// and waited for by polling through `over` (Communicator::wait_until), with its deadline, so a
// stalled peer ends in ncclCommAbort and a CommError naming the operation, never a hang: at once,
// or, for a communicator given an NcclQueue, when the queue is waited for.
// Library tps_comm_nccl, built where NCCL is found (TPS_HAS_NCCL) without MPI; elsewhere
// make_nccl_communicator throws.
#pragma once

#include "tpserve/comm/communicator.h"

#include <memory>

namespace tps {

class NcclQueue;

// `stream`: a cudaStream_t to run on, or nullptr for one of the communicator's own. `queue`
// (on the same stream): the calls return once their work is queued on the stream, and
// NcclQueue::wait waits for it; without one, each call waits for its own work.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& over, int device, void* stream = nullptr,
                                                     NcclQueue* queue = nullptr);

// The collectives queued on one CUDA stream, in issue order, by the communicators that share it
// (a model's tensor-parallel and hand-over groups on its backend's stream). Their calls return
// once the work is queued, so the host does not wait between a step's kernels and its
// collectives; wait() waits for each collective in turn under its communicator's deadline, then
// for the rest of the stream. A collective that does not complete names itself (operation, what
// for, group, the ranks not answering) and every communicator of the queue is aborted, so no
// kernel is left waiting for ever. A collective's device time (between events recorded around
// it) goes to its communicator's statistics when it is waited for.
class NcclQueue {
public:
    explicit NcclQueue(void* stream);
    ~NcclQueue();
    NcclQueue(const NcclQueue&) = delete;
    NcclQueue& operator=(const NcclQueue&) = delete;

    void wait();
    // collectives queued and not yet waited for
    size_t queued() const noexcept;

    struct Impl;
    Impl& impl() noexcept { return *impl_; }

private:
    std::unique_ptr<Impl> impl_;
};

// Device memory on `device` for NCCL buffers (`tpserve check`); throws without NCCL.
class DeviceBuffer {
public:
    DeviceBuffer(int device, int64_t bytes);
    ~DeviceBuffer();
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    void* data() const noexcept { return data_; }

private:
    void* data_ = nullptr;
};

// Whether this build has NCCL, and how many CUDA devices this process sees (0 without CUDA).
bool nccl_built() noexcept;
int cuda_device_count() noexcept;

}  // namespace tps
