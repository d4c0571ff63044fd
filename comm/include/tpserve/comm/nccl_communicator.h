// NcclCommunicator: the Communicator over device buffers, for the ranks of one group. The NCCL id
// is made on the group's first rank and broadcast over `over` (the same group's host
// communicator: MpiCommunicator under mpirun, which also carries post_message and
// receive_message). The communicator is non-blocking: every call is enqueued on the rank's stream
// and waited for by polling through `over` (Communicator::wait_until), with its deadline, so a
// stalled peer ends in ncclCommAbort and a CommError naming the operation, never a hang.
// Library tps_comm_nccl, built where NCCL is found (TPS_HAS_NCCL) without MPI; elsewhere
// make_nccl_communicator throws.
#pragma once

#include "tpserve/comm/communicator.h"

#include <memory>

namespace tps {

// `stream`: a cudaStream_t to run on, or nullptr for one of the communicator's own.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& over, int device, void* stream = nullptr);

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
