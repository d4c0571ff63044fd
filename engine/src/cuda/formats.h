// The weight and KV formats the CUDA kernels are instantiated for, and a weight as they read it,
// as the host launchers and the kernels both see them (no device code here: the backend's host
// side includes it too).
#pragma once

#include <cstdint>

namespace tps::cuda {

// A subset of tps::DType: what the kernels read weights in.
enum class WFormat : int {
    f32, f16, bf16, int8,
    // GGML blocks of 32
    q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl,
    // GGML super-blocks of 256
    q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs,
};

// KV cache elements (KvLayout::dtype).
enum class KvFormat : int { f32, f16, bf16 };

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// GGML formats: rows of whole blocks, of 32 elements or of 256 (the K-quants and iq4_xs). The
// kernels read every block format as 32-element chunks (a super-block is 8 of them).
constexpr bool is_block_format(WFormat f) { return f >= WFormat::q8_0; }
constexpr int64_t block_elems(WFormat f) { return f >= WFormat::q2_k ? 256 : f >= WFormat::q8_0 ? 32 : 1; }

// Bytes of one block of a block format (0 for the plain ones), as ggml-common.h lays them out
// (engine/src/weights/ggml_blocks.cpp), and the widest load, 4 or 2 bytes, that every field of a
// block allows when a row starts so aligned (rows of whole blocks keep it).
constexpr int64_t block_bytes(WFormat f) {
    switch (f) {
        case WFormat::q8_0: return 34;
        case WFormat::q4_0: return 18;
        case WFormat::q4_1: return 20;
        case WFormat::q5_0: return 22;
        case WFormat::q5_1: return 24;
        case WFormat::iq4_nl: return 18;
        case WFormat::q2_k: return 84;
        case WFormat::q3_k: return 110;
        case WFormat::q4_k: return 144;
        case WFormat::q5_k: return 176;
        case WFormat::q6_k: return 210;
        case WFormat::iq4_xs: return 136;
        default: return 0;
    }
}
constexpr int block_align(WFormat f) { return block_bytes(f) % 4 == 0 ? 4 : 2; }

// Formats cuBLAS has no type for: expanded to f16 a slice of rows at a time for a GEMM.
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
