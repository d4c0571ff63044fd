// The CPU kernels' entry points, each with an AVX2 version and a scalar reference that the tests
// hold the fast one against. Activations are f32; weights any format engine_supports().
#pragma once

#include "tpserve/engine/weights.h"

#include <cstdint>

namespace tps::cpu {

bool have_avx2() noexcept;

// Memory the next matmul will stream: decode prefetches it while finishing its own rows, so the
// next matrix does not start cold.
struct PrefetchNext {
    const std::byte* start = nullptr;
    int64_t bytes = 0;
};

// y[t * y_stride + r] = dot(W row r, x[t * x_stride ...]) for rows [r0, r1) and tokens [0, n_tok).
void matmul_rows(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride, int64_t n_tok,
                 float* y, int64_t y_stride, PrefetchNext next = {});
// The same, scalar: the reference.
void matmul_rows_reference(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t x_stride,
                           int64_t n_tok, float* y, int64_t y_stride);

// Force the scalar paths (tests compare both on one machine).
void force_scalar(bool on) noexcept;

}  // namespace tps::cpu
