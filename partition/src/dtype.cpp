// Byte sizes of every storage format. GGML block sizes follow ggml's type traits (ggml.c,
// type_traits[]: blck_size and type_size; gguf-py's GGML_QUANT_SIZES agrees except for q8_1, an
// in-memory type never stored in files, which it lists as 40 bytes); the planner's own formats are documented in
// docs/planner.md ("Weight formats"). tests/unit/partition/dtype_test.cpp checks the GGML sizes
// against the gguf Python package's GGML_QUANT_SIZES.
#include "tpserve/partition/dtype.h"

#include "tpserve/common/strings.h"

#include <array>

namespace tps {
namespace {

struct DTypeInfo {
    DType type;
    std::string_view name;
    int ggml_id;  // -1: not a GGML type
    DTypeLayout layout;
};

constexpr DTypeLayout plain(int64_t bytes) { return {1, bytes * 8, 0, 0}; }
constexpr DTypeLayout blocks(int64_t block, int64_t bytes) { return {block, bytes * 8, 0, 0}; }

// clang-format off
constexpr std::array kInfo = {
    DTypeInfo{DType::f32,     "f32",     0,  plain(4)},
    DTypeInfo{DType::f16,     "f16",     1,  plain(2)},
    DTypeInfo{DType::bf16,    "bf16",    30, plain(2)},
    DTypeInfo{DType::f64,     "f64",     28, plain(8)},
    DTypeInfo{DType::i8,      "i8",      24, plain(1)},
    DTypeInfo{DType::i16,     "i16",     25, plain(2)},
    DTypeInfo{DType::i32,     "i32",     26, plain(4)},
    DTypeInfo{DType::i64,     "i64",     27, plain(8)},
    // fp8 e4m3 + one f32 scale per tensor shard
    DTypeInfo{DType::fp8,     "fp8",     -1, {1, 8, 0, 4}},
    // int8 + one f16 scale per output channel
    DTypeInfo{DType::int8,    "int8",    -1, {1, 8, 2, 0}},
    // 128 x 4 bits + f16 scale + 4-bit zero per group of 128 along the input
    DTypeInfo{DType::int4,    "int4",    -1, {128, 128 * 4 + 16 + 4, 0, 0}},
    DTypeInfo{DType::q4_0,    "q4_0",    2,  blocks(32, 18)},
    DTypeInfo{DType::q4_1,    "q4_1",    3,  blocks(32, 20)},
    DTypeInfo{DType::q5_0,    "q5_0",    6,  blocks(32, 22)},
    DTypeInfo{DType::q5_1,    "q5_1",    7,  blocks(32, 24)},
    DTypeInfo{DType::q8_0,    "q8_0",    8,  blocks(32, 34)},
    DTypeInfo{DType::q8_1,    "q8_1",    9,  blocks(32, 36)},
    DTypeInfo{DType::q2_k,    "q2_k",    10, blocks(256, 84)},
    DTypeInfo{DType::q3_k,    "q3_k",    11, blocks(256, 110)},
    DTypeInfo{DType::q4_k,    "q4_k",    12, blocks(256, 144)},
    DTypeInfo{DType::q5_k,    "q5_k",    13, blocks(256, 176)},
    DTypeInfo{DType::q6_k,    "q6_k",    14, blocks(256, 210)},
    DTypeInfo{DType::q8_k,    "q8_k",    15, blocks(256, 292)},
    DTypeInfo{DType::iq2_xxs, "iq2_xxs", 16, blocks(256, 66)},
    DTypeInfo{DType::iq2_xs,  "iq2_xs",  17, blocks(256, 74)},
    DTypeInfo{DType::iq3_xxs, "iq3_xxs", 18, blocks(256, 98)},
    DTypeInfo{DType::iq1_s,   "iq1_s",   19, blocks(256, 50)},
    DTypeInfo{DType::iq4_nl,  "iq4_nl",  20, blocks(32, 18)},
    DTypeInfo{DType::iq3_s,   "iq3_s",   21, blocks(256, 110)},
    DTypeInfo{DType::iq2_s,   "iq2_s",   22, blocks(256, 82)},
    DTypeInfo{DType::iq4_xs,  "iq4_xs",  23, blocks(256, 136)},
    DTypeInfo{DType::iq1_m,   "iq1_m",   29, blocks(256, 56)},
    DTypeInfo{DType::tq1_0,   "tq1_0",   34, blocks(256, 54)},
    DTypeInfo{DType::tq2_0,   "tq2_0",   35, blocks(256, 66)},
    DTypeInfo{DType::mxfp4,   "mxfp4",   39, blocks(32, 17)},
    DTypeInfo{DType::nvfp4,   "nvfp4",   40, blocks(64, 36)},
    DTypeInfo{DType::q1_0,    "q1_0",    41, blocks(128, 18)},
};
// clang-format on

const DTypeInfo& info(DType t) noexcept {
    for (const auto& i : kInfo) {
        if (i.type == t) return i;
    }
    return kInfo[0];  // unreachable: every enumerator has a row (dtype_test checks)
}

}  // namespace

DTypeLayout dtype_layout(DType t) noexcept { return info(t).layout; }

std::string_view dtype_name(DType t) noexcept { return info(t).name; }

std::optional<DType> parse_dtype(std::string_view name) {
    const std::string n = to_lower(trim(name));
    if (n == "fp16" || n == "float16" || n == "half") return DType::f16;
    if (n == "bfloat16") return DType::bf16;
    if (n == "fp32" || n == "float32" || n == "float") return DType::f32;
    if (n == "float64" || n == "double") return DType::f64;
    if (n == "float8" || n == "fp8_e4m3" || n == "float8_e4m3fn") return DType::fp8;
    for (const auto& i : kInfo) {
        if (i.name == n) return i.type;
    }
    return std::nullopt;
}

std::optional<DType> dtype_from_ggml(uint32_t ggml_type) noexcept {
    for (const auto& i : kInfo) {
        if (i.ggml_id >= 0 && static_cast<uint32_t>(i.ggml_id) == ggml_type) return i.type;
    }
    return std::nullopt;
}

bool is_ggml_block_type(DType t) noexcept { return info(t).ggml_id >= 0 && info(t).layout.block > 1; }

bool is_planner_weight_format(DType t) noexcept {
    switch (t) {
        case DType::f32: case DType::f16: case DType::bf16:
        case DType::fp8: case DType::int8: case DType::int4:
            return true;
        case DType::f64: case DType::i8: case DType::i16: case DType::i32: case DType::i64:
            return false;
        case DType::q4_0: case DType::q4_1: case DType::q5_0: case DType::q5_1: case DType::q8_0:
        case DType::q8_1: case DType::q2_k: case DType::q3_k: case DType::q4_k: case DType::q5_k:
        case DType::q6_k: case DType::q8_k: case DType::iq2_xxs: case DType::iq2_xs:
        case DType::iq3_xxs: case DType::iq1_s: case DType::iq4_nl: case DType::iq3_s:
        case DType::iq2_s: case DType::iq4_xs: case DType::iq1_m: case DType::tq1_0:
        case DType::tq2_0: case DType::mxfp4: case DType::nvfp4: case DType::q1_0:
            // GGML types can be planned for an HF checkpoint too ("what would q4_k need?")
            return true;
    }
    return false;
}

std::optional<int64_t> kv_element_bytes(DType t) noexcept {
    switch (t) {
        case DType::f32: return 4;
        case DType::f16: case DType::bf16: return 2;
        case DType::fp8: return 1;
        default: return std::nullopt;
    }
}

std::optional<int64_t> matrix_bytes(DType t, int64_t out, int64_t in) noexcept {
    const DTypeLayout l = info(t).layout;
    if (out < 0 || in < 0) return std::nullopt;
    if (in == 1 && l.block > 1) std::swap(in, out);  // a vector stores its n elements as one row
    if (in % l.block != 0) return std::nullopt;
    int64_t bits = 0;
    int64_t extra = 0;
    if (__builtin_mul_overflow(out, in / l.block, &bits) || __builtin_mul_overflow(bits, l.block_bits, &bits) ||
        __builtin_mul_overflow(out, l.row_extra_bytes, &extra)) {
        return std::nullopt;  // no real tensor is this large
    }
    return (bits + 7) / 8 + extra + l.tensor_extra_bytes;
}

double bits_per_weight(DType t) noexcept {
    const DTypeLayout l = info(t).layout;
    return static_cast<double>(l.block_bits) / static_cast<double>(l.block);
}

}  // namespace tps
