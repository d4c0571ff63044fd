// One block of a GGML quantized format, decoded to f32 or encoded from it: the scalar reference
// of every block format the engine computes with (ggml_blocks.cpp has the layouts). The decoders
// and the CPU's vector loads (cpu/simd.h) are both held to gguf-py's values (ggml_blocks_test).
#pragma once

#include "tpserve/partition/dtype.h"

#include <cstddef>
#include <cstdint>

// The bit-layout helpers below are compiled for the CUDA kernels too (engine/src/cuda/common.cuh).
#if defined(__CUDACC__)
#define TPS_GGML_HD __host__ __device__
#else
#define TPS_GGML_HD
#endif

namespace tps::ggml {

// The GGML block formats the engine reads: q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl (blocks of 32),
// the K-quants q2_k, q3_k, q4_k, q5_k, q6_k and iq4_xs (super-blocks of 256).
constexpr bool engine_block_format(DType t) noexcept {
    switch (t) {
        case DType::q8_0: case DType::q4_0: case DType::q4_1: case DType::q5_0: case DType::q5_1:
        case DType::q2_k: case DType::q3_k: case DType::q4_k: case DType::q5_k: case DType::q6_k:
        case DType::iq4_nl: case DType::iq4_xs:
            return true;
        default:
            return false;
    }
}
// Those it also writes (encode_block): all but the i-quants, whose quantizers need a search this
// engine does not have.
constexpr bool engine_encodes(DType t) noexcept {
    return engine_block_format(t) && t != DType::iq4_nl && t != DType::iq4_xs;
}

// The 16 values of iq4_nl / iq4_xs quants (ggml-common.h's kvalues_iq4nl).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// kIq4Values[nibble] without a table in memory (device code cannot index a host array): the 16
// values packed in two 64-bit constants, a byte each, the first value lowest.
TPS_GGML_HD constexpr int iq4_value(int nibble) noexcept {
    return static_cast<int8_t>(static_cast<uint8_t>((nibble < 8 ? 0xF6EADDCFBFAD9881ull : 0x7159453526190D01ull) >>
                                                    (8 * (nibble & 7))));
}
constexpr bool iq4_packed_matches() {
    for (int n = 0; n < 16; ++n) {
        if (iq4_value(n) != kIq4Values[n]) return false;
    }
    return true;
}
static_assert(iq4_packed_matches(), "iq4_value must equal kIq4Values");

// iq4_xs: sub-block j's scale less its offset of 32 (6 bits: 4 in scales_l, 2 in scales_h).
TPS_GGML_HD inline int iq4xs_scale(int j, uint16_t scales_h, const uint8_t* scales_l) noexcept {
    return (((scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((scales_h >> (2 * j)) & 3) << 4)) - 32;
}

// The dtype_layout(type).block elements of one block.
void decode_block(DType type, const std::byte* blk, float* out);

// Quantizes dtype_layout(type).block floats into one block. q8_0, q4_0, q4_1, q5_0 and q5_1 as
// ggml's reference quantizers; the K-quants with one pass of min/max scales per sub-block (no
// search for the scales that minimise the error, as llama-quantize does), the scales rounded to
// their nearest stored step and the levels fitted to the rounded scales. The error bounds per
// format are in ggml_blocks_test (round_trip_bound): half a level, or a whole one on the far side
// of the symmetric formats, plus the scales' rounding.
void encode_block(DType type, const float* x, std::byte* blk);

// K-quant scales packed in 12 bytes (q4_k, q5_k): sub-block j's 6-bit scale and 6-bit min, as
// ggml's get_scale_min_k4.
// (Both spellings are computed and one chosen, without a branch: q[j - 4] for j < 4 reads the 4
// bytes before the scales, the block's d and dmin, and is not used.)
TPS_GGML_HD inline void k4_scale_min(int j, const uint8_t* q, int& scale, int& min) noexcept {
    const int lo_scale = q[j] & 63, lo_min = q[j + 4] & 63;
    const int hi_scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    const int hi_min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    scale = j < 4 ? lo_scale : hi_scale;
    min = j < 4 ? lo_min : hi_min;
}

// q3_k's 16 signed 6-bit scales packed in 12 bytes: scale j (already less its offset of 32).
TPS_GGML_HD inline int q3k_scale(int j, const uint8_t* q) noexcept {
    const int low = j < 8 ? q[j] & 0xF : q[j - 8] >> 4;
    const int high = (q[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    return (low | (high << 4)) - 32;
}

}  // namespace tps::ggml
