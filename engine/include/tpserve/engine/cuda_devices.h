// The CUDA devices this process can see, for `tpserve plan --gpus auto` and, later, `tpserve
// check`. Without a CUDA build, or on a machine without a GPU or driver, the list is empty and
// cuda_unavailable_reason() says why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tps {

struct CudaDevice {
    int index = 0;
    std::string name;  // "NVIDIA GeForce RTX 5090"
    int64_t total_bytes = 0;
    int64_t free_bytes = 0;
    int sm = 0;  // compute capability x10
    int multiprocessors = 0;
};

// free_memory: also each device's free bytes, which makes a CUDA context on every device (a few
// hundred MB each, and refused on devices in exclusive-process mode that another process holds);
// without it free_bytes is 0 and no context is made.
std::vector<CudaDevice> list_cuda_devices(bool free_memory = true);

// can[a][b]: device a can read and write device b's memory directly (cudaDeviceCanAccessPeer;
// the diagonal is true). Empty without devices.
std::vector<std::vector<bool>> cuda_peer_access();

// Empty when devices are present; otherwise why none are ("built without CUDA", the driver's
// error string, ...).
std::string cuda_unavailable_reason();

}  // namespace tps
