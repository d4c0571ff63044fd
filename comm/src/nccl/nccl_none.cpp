// Builds without NCCL: say so clearly when a NCCL communicator is asked for.
#include "tpserve/comm/nccl_communicator.h"
#include "tpserve/common/error.h"

namespace tps {

namespace {
[[noreturn]] void no_nccl() {
    throw UsageError("this tpserve was built without NCCL (the CUDA toolkit with NCCL was not found at configure time)");
}
}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, int, void*, NcclQueue*) { no_nccl(); }

struct NcclQueue::Impl {};
NcclQueue::NcclQueue(void*) { no_nccl(); }
NcclQueue::~NcclQueue() = default;
void NcclQueue::wait() {}
size_t NcclQueue::queued() const noexcept { return 0; }

DeviceBuffer::DeviceBuffer(int, int64_t) {
    throw UsageError("this tpserve was built without CUDA and NCCL: no device buffers");
}
DeviceBuffer::~DeviceBuffer() = default;

bool nccl_built() noexcept { return false; }
int cuda_device_count() noexcept { return 0; }

}  // namespace tps
