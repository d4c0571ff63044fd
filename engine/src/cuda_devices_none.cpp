// Built when CUDA is not: there are no CUDA devices to list.
#include "tpserve/engine/cuda_devices.h"

namespace tps {

std::vector<CudaDevice> list_cuda_devices(bool) { return {}; }

std::vector<std::vector<bool>> cuda_peer_access() { return {}; }

std::string cuda_unavailable_reason() { return "this tpserve was built without CUDA"; }

}  // namespace tps
