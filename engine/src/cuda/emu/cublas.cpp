// The emulator's cuBLAS: cublasGemmEx on the host, in its stream's order (recorded when the
// stream captures), with the operands' extents checked against their device allocations, since a
// GEMM that reads past a buffer on a GPU returns garbage rather than failing.
#include "cublas_v2.h"

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "internal.h"

#include <algorithm>
#include <string>
#include <vector>

namespace tpsemu {

struct Cublas {
    cudaStream_t stream = nullptr;
};

namespace {

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

float load(const void* base, int64_t i, cudaDataType_t t) {
    switch (t) {
        case CUDA_R_32F: return static_cast<const float*>(base)[i];
        case CUDA_R_16F: return __half2float(static_cast<const __half*>(base)[i]);
        case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    }
    return 0;
}

void store(void* base, int64_t i, cudaDataType_t t, float v) {
    switch (t) {
        case CUDA_R_32F: static_cast<float*>(base)[i] = v; break;
        case CUDA_R_16F: static_cast<__half*>(base)[i] = __float2half_rn(v); break;
        case CUDA_R_16BF: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
    }
}

// A column-major rows x cols operand with leading dimension ld lies inside one allocation.
bool in_device(const void* p, int64_t rows, int64_t cols, int64_t ld, cudaDataType_t t) {
    if (rows == 0 || cols == 0) return true;
    const int64_t last = (cols - 1) * ld + rows;
    return is_device_range(p, static_cast<size_t>(last) * type_bytes(t));
}

}  // namespace
}  // namespace tpsemu

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        cudaGetLastError();
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    *handle = new tpsemu::Cublas;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && !tpsemu::is_device_range(workspace, bytes)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

// C (m x n) = alpha op(A) op(B) + beta C, column-major, op(A) m x k and op(B) k x n.
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType_t Atype, int lda, const void* B,
                            cudaDataType_t Btype, int ldb, const void* beta, void* C, cudaDataType_t Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
    using tpsemu::in_device;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || !alpha || !beta || computeType != CUBLAS_COMPUTE_32F || !tpsemu::known_type(Atype) ||
        !tpsemu::known_type(Btype) || !tpsemu::known_type(Ctype) || transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
    // stored shapes: A is (ta ? k x m : m x k), B is (tb ? n x k : k x n)
    const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    if (lda < std::max(1, a_rows) || ldb < std::max(1, b_rows) || ldc < std::max(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
    if (!in_device(A, a_rows, a_cols, lda, Atype) || !in_device(B, b_rows, b_cols, ldb, Btype) ||
        !in_device(C, m, n, ldc, Ctype)) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    const cudaError_t e = tpsemu::submit(handle->stream, [=]() -> cudaError_t {
        if (!in_device(A, a_rows, a_cols, lda, Atype) || !in_device(B, b_rows, b_cols, ldb, Btype) ||
            !in_device(C, m, n, ldc, Ctype)) {
            return tpsemu::fail(cudaErrorIllegalAddress, "a GEMM in a replayed graph reads device memory that was freed");
        }
        std::vector<float> a_row(static_cast<size_t>(k));
        for (int i = 0; i < m; ++i) {
            for (int p = 0; p < k; ++p) {
                a_row[static_cast<size_t>(p)] = tpsemu::load(A, ta ? int64_t{i} * lda + p : int64_t{p} * lda + i, Atype);
            }
            for (int j = 0; j < n; ++j) {
                float acc = 0;
                for (int p = 0; p < k; ++p) {
                    acc += a_row[static_cast<size_t>(p)] * tpsemu::load(B, tb ? int64_t{p} * ldb + j : int64_t{j} * ldb + p, Btype);
                }
                const int64_t c = int64_t{j} * ldc + i;
                const float prior = be == 0.0f ? 0.0f : be * tpsemu::load(C, c, Ctype);  // beta 0: C is not read
                tpsemu::store(C, c, Ctype, al * acc + prior);
            }
        }
        return cudaSuccess;
    });
    return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
