// Scalar conversions of stored rows to f32: the reference the vectorised kernels are tested
// against, and what embedding lookups and vectors use. The GGML block formats are decoded block by
// block (ggml_blocks.cpp has their layouts). int8 rows are plain int8 values; their scales trail
// the matrix (weights.h, weight.cpp).
#include "ggml_blocks.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/engine/weights.h"

#include <cstring>

namespace tps {

bool engine_supports(DType t) noexcept {
    switch (t) {
        case DType::f32: case DType::f16: case DType::bf16: case DType::int8:
            return true;
        default:
            return ggml::engine_block_format(t);
    }
}

bool engine_stores(DType t) noexcept {
    return engine_supports(t) && (!ggml::engine_block_format(t) || ggml::engine_encodes(t));
}

std::string_view engine_format_names() noexcept {
    return "f32, f16, bf16, int8, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs";
}

std::string_view engine_store_names() noexcept {
    return "f32, f16, bf16, int8, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k";
}

void row_to_f32(DType type, const std::byte* row, int64_t first, int64_t n, float* out) {
    switch (type) {
        case DType::f32:
            std::memcpy(out, row + first * 4, static_cast<size_t>(n) * 4);
            return;
        case DType::f16:
            for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(load_u16(row + (first + i) * 2));
            return;
        case DType::bf16:
            for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(load_u16(row + (first + i) * 2));
            return;
        case DType::int8: {
            const auto* q = reinterpret_cast<const int8_t*>(row) + first;
            for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]);
            return;
        }
        default:
            break;
    }
    TPS_CHECK_AS(InputError, ggml::engine_block_format(type), "{} weights are not supported by the engine ({} are)",
                 dtype_name(type), engine_format_names());
    const DTypeLayout l = dtype_layout(type);
    const int64_t block_bytes = l.block_bits / 8;
    TPS_CHECK(first % l.block == 0 && n % l.block == 0, "{} rows are read in whole {}-element blocks, not [{}, {})",
              dtype_name(type), l.block, first, first + n);
    for (int64_t b = first / l.block; b < (first + n) / l.block; ++b) {
        ggml::decode_block(type, row + b * block_bytes, out);
        out += l.block;
    }
}

void f32_to_row(DType type, const float* x, int64_t n, std::byte* row) {
    auto put16 = [](std::byte* p, uint16_t v) { std::memcpy(p, &v, 2); };
    switch (type) {
        case DType::f32:
            std::memcpy(row, x, static_cast<size_t>(n) * 4);
            return;
        case DType::f16:
            for (int64_t i = 0; i < n; ++i) put16(row + 2 * i, f32_to_f16(x[i]));
            return;
        case DType::bf16:
            for (int64_t i = 0; i < n; ++i) put16(row + 2 * i, f32_to_bf16(x[i]));
            return;
        default:
            break;
    }
    TPS_CHECK_AS(InputError, type != DType::int8, "int8 rows carry their scale outside the row: store them with store_row");
    TPS_CHECK_AS(InputError, ggml::engine_encodes(type), "cannot store {} rows (the engine writes {})", dtype_name(type),
                 engine_store_names());
    const DTypeLayout l = dtype_layout(type);
    TPS_CHECK(n % l.block == 0, "{} rows hold whole {}-element blocks, got {}", dtype_name(type), l.block, n);
    for (int64_t b = 0; b < n / l.block; ++b) ggml::encode_block(type, x + b * l.block, row + b * (l.block_bits / 8));
}

}  // namespace tps
