// TPS_CHECK_CUDA, TPS_CHECK_CUBLAS and TPS_CHECK_LAUNCH: one line each over the generator in
// tpserve/common/error.h, so a failure names the call, file, line, rank and device.
#pragma once

#include "tpserve/common/error.h"

#include <cuda_runtime_api.h>

#define TPS_CHECK_CUDA(stmt) \
    TPS_CHECK_STATUS_(::tps::ErrorKind::device, "CUDA", stmt, tps_status_ == cudaSuccess, ::cudaGetErrorString)
// after a kernel launch: a bad configuration is reported at once, not at the next synchronisation
#define TPS_CHECK_LAUNCH(what) TPS_CHECK_CUDA(::cudaPeekAtLastError())
