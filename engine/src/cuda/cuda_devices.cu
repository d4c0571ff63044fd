// Device enumeration through the CUDA runtime. "No device" and "no driver" are answers, not
// errors: the list is empty and the reason is kept; every other failure throws DeviceError.
#include "cuda_check.h"
#include "tpserve/engine/cuda_devices.h"

#include <cuda_runtime_api.h>

namespace tps {
namespace {

bool is_absence(cudaError_t e) {
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError ||
           e == cudaErrorSystemDriverMismatch || e == cudaErrorCompatNotSupportedOnDevice;
}

// The number of devices; 0 when there are none or no driver (the sticky error cleared).
int device_count() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (is_absence(e)) {
        cudaGetLastError();
        return 0;
    }
    TPS_CHECK_CUDA(e);
    return n;
}

}  // namespace

std::string cuda_unavailable_reason() {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaSuccess && n > 0) return {};
    if (e == cudaSuccess) return "the CUDA runtime sees no device";
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
}

std::vector<CudaDevice> list_cuda_devices(bool free_memory) {
    const int n = device_count();
    std::vector<CudaDevice> out;
    if (n == 0) return out;
    int current = 0;
    if (free_memory) TPS_CHECK_CUDA(cudaGetDevice(&current));
    for (int i = 0; i < n; ++i) {
        cudaDeviceProp prop{};
        TPS_CHECK_CUDA(cudaGetDeviceProperties(&prop, i));
        CudaDevice d;
        d.index = i;
        d.name = prop.name;
        d.total_bytes = static_cast<int64_t>(prop.totalGlobalMem);
        d.sm = prop.major * 10 + prop.minor;
        d.multiprocessors = prop.multiProcessorCount;
        if (free_memory) {
            TPS_CHECK_CUDA(cudaSetDevice(i));
            size_t free_b = 0, total_b = 0;
            TPS_CHECK_CUDA(cudaMemGetInfo(&free_b, &total_b));
            d.free_bytes = static_cast<int64_t>(free_b);
        }
        out.push_back(d);
    }
    if (free_memory) TPS_CHECK_CUDA(cudaSetDevice(current));
    return out;
}

std::vector<std::vector<bool>> cuda_peer_access() {
    const int n = device_count();
    std::vector<std::vector<bool>> can(static_cast<size_t>(n), std::vector<bool>(static_cast<size_t>(n), false));
    for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
            int ok = 0;
            if (a != b) TPS_CHECK_CUDA(cudaDeviceCanAccessPeer(&ok, a, b));
            can[static_cast<size_t>(a)][static_cast<size_t>(b)] = a == b || ok != 0;
        }
    }
    return can;
}

}  // namespace tps
