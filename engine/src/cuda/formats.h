// The weight and KV formats the CUDA kernels are instantiated for, and a weight as they read it,
// as the host launchers and the kernels both see them (no device code here: the backend's host
// side includes it too).
#pragma once

#include <cstdint>

namespace tps::cuda {

// A subset of tps::DType: what the kernels read weights in.
enum class WFormat : int { f32, f16, bf16, int8, q8_0, q4_0, q4_1 };

// KV cache elements (KvLayout::dtype).
enum class KvFormat : int { f32, f16, bf16 };

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// GGML formats: rows of 32-element blocks (a row's length a multiple of 32).
constexpr bool is_block_format(WFormat f) { return f == WFormat::q8_0 || f == WFormat::q4_0 || f == WFormat::q4_1; }

// Formats cuBLAS has no type for: expanded to bf16 a slice of rows at a time for a GEMM.
constexpr bool expands_for_gemm(WFormat f) { return is_block_format(f) || f == WFormat::int8; }

// A weight matrix in device memory as the kernels read it: `rows` rows of `cols` elements in
// `format`, each row `row_bytes` long. int8 rows hold the integers alone (row_bytes = cols); the
// row's f16 scale is scales[r] (the block after the last row, tps::Weight).
struct WeightRows {
    const uint8_t* data = nullptr;
    WFormat format = WFormat::f32;
    int64_t rows = 0, cols = 0, row_bytes = 0;
    const uint8_t* scales = nullptr;  // int8 only
};

}  // namespace tps::cuda
