// TPS_CHECK_CUDA and TPS_CHECK_CUBLAS: one line each over the generator in
// tpserve/common/error.h, so a failure names the call, file, line, rank and device.
#pragma once

#include "tpserve/common/error.h"

#include <cuda_runtime_api.h>

#define TPS_CHECK_CUDA(stmt) \
    TPS_CHECK_STATUS_(::tps::ErrorKind::device, "CUDA", stmt, tps_status_ == cudaSuccess, ::cudaGetErrorString)
