// TPS_CHECK_CUBLAS: the cuBLAS status check, one line over the generator in tpserve/common/error.h.
#pragma once

#include "tpserve/common/error.h"

#include <cublas_v2.h>

#define TPS_CHECK_CUBLAS(stmt) \
    TPS_CHECK_STATUS_(::tps::ErrorKind::device, "cuBLAS", stmt, tps_status_ == CUBLAS_STATUS_SUCCESS, ::cublasGetStatusString)
