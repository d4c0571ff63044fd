// Storage formats of weights and KV entries, and their exact byte sizes. One enum covers the
// checkpoint dtypes (f32/f16/bf16), the planner's quantized formats (fp8, int8, int4) and every
// GGML block type a GGUF file may carry, so the memory model is exact for all of them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tps {

enum class DType : uint8_t {
    // plain element types
    f32, f16, bf16, f64, i8, i16, i32, i64,
    // the planner's weight-only formats for HF checkpoints (layouts in docs/planner.md)
    fp8,   // e4m3, one f32 scale per tensor (per shard)
    int8,  // one int8 per weight, one f16 scale per output channel
    int4,  // 4-bit, groups of 128 along the input: f16 scale + 4-bit zero per group (AWQ/GPTQ)
    // GGML block types (GGUF)
    q4_0, q4_1, q5_0, q5_1, q8_0, q8_1,
    q2_k, q3_k, q4_k, q5_k, q6_k, q8_k,
    iq2_xxs, iq2_xs, iq3_xxs, iq1_s, iq4_nl, iq3_s, iq2_s, iq4_xs, iq1_m,
    tq1_0, tq2_0, mxfp4, nvfp4, q1_0,
};

// How a format lays out a row: `block` consecutive elements along the input dimension take
// `block_bits` bits (bits, because int4's 4-bit zero point makes a group 66.5 bytes), plus
// per-row and per-tensor extras (scales) for the planner's formats.
struct DTypeLayout {
    int64_t block = 1;               // elements per block along a row
    int64_t block_bits = 0;          // bits per block, scales and zeros of the block included
    int64_t row_extra_bytes = 0;     // per output row (int8's channel scale)
    int64_t tensor_extra_bytes = 0;  // per tensor or shard (fp8's scale)
};

DTypeLayout dtype_layout(DType t) noexcept;
std::string_view dtype_name(DType t) noexcept;

// Accepts the canonical names and common spellings: fp16/float16/half, bf16/bfloat16, fp32/float32,
// q4_k/Q4_K. nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);

// GGUF's numeric type ids (ggml_type); nullopt for ids that are unknown or removed from GGML.
std::optional<DType> dtype_from_ggml(uint32_t ggml_type) noexcept;

bool is_ggml_block_type(DType t) noexcept;
// Formats the planner can apply to an HF checkpoint's linear layers with --format.
bool is_planner_weight_format(DType t) noexcept;
// Bytes of one element for a KV-cache entry (f32, f16, bf16, fp8); nullopt for other types.
std::optional<int64_t> kv_element_bytes(DType t) noexcept;

// Bytes of a matrix with `out` rows of `in` elements (a vector is out = n, in = 1), or nullopt when
// the row length does not split into whole blocks or the size overflows 64 bits. Exact,
// including scales and zeros.
std::optional<int64_t> matrix_bytes(DType t, int64_t out, int64_t in) noexcept;

// Average bits per weight of a large matrix (for display: "int4 ≈ 4.13 bits").
double bits_per_weight(DType t) noexcept;

}  // namespace tps
