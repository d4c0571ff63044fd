// Scalar conversions of stored rows to f32: the reference the vectorised kernels are tested
// against, and what embedding lookups and vectors use. GGML block layouts: q8_0 = {f16 d;
// int8 q[32]}, q4_0 = {f16 d; u8 q[16]} (element j is the low nibble of q[j], j+16 the high one,
// value (nibble - 8) * d), q4_1 = {f16 d; f16 m; u8 q[16]} (value nibble * d + m). int8 rows
// are plain int8 values; their scales trail the matrix (weights.h, weight.cpp).
#include "tpserve/common/check.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/engine/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tps {

bool engine_supports(DType t) noexcept {
    switch (t) {
        case DType::f32: case DType::f16: case DType::bf16: case DType::int8: case DType::q8_0: case DType::q4_0:
        case DType::q4_1:
            return true;
        default:
            return false;
    }
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
        case DType::q8_0:
            for (int64_t b = first / 32; b < (first + n) / 32; ++b) {
                const std::byte* blk = row + b * 34;
                const float d = f16_to_f32(load_u16(blk));
                const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
                for (int j = 0; j < 32; ++j) *out++ = d * static_cast<float>(q[j]);
            }
            return;
        case DType::q4_0:
            for (int64_t b = first / 32; b < (first + n) / 32; ++b) {
                const std::byte* blk = row + b * 18;
                const float d = f16_to_f32(load_u16(blk));
                const auto* q = reinterpret_cast<const uint8_t*>(blk + 2);
                for (int j = 0; j < 16; ++j) out[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
                for (int j = 0; j < 16; ++j) out[16 + j] = d * static_cast<float>((q[j] >> 4) - 8);
                out += 32;
            }
            return;
        case DType::q4_1:
            for (int64_t b = first / 32; b < (first + n) / 32; ++b) {
                const std::byte* blk = row + b * 20;
                const float d = f16_to_f32(load_u16(blk));
                const float m = f16_to_f32(load_u16(blk + 2));
                const auto* q = reinterpret_cast<const uint8_t*>(blk + 4);
                for (int j = 0; j < 16; ++j) out[j] = d * static_cast<float>(q[j] & 0x0F) + m;
                for (int j = 0; j < 16; ++j) out[16 + j] = d * static_cast<float>(q[j] >> 4) + m;
                out += 32;
            }
            return;
        default:
            throw InputError(fmt::format("{} weights are not supported by the engine (f32, f16, bf16, int8, q8_0, "
                                         "q4_0, q4_1 are)",
                                         dtype_name(type)));
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
    TPS_CHECK(n % 32 == 0, "{} rows hold whole 32-element blocks, got {}", dtype_name(type), n);
    for (int64_t b = 0; b < n / 32; ++b) {
        const float* v = x + b * 32;
        if (type == DType::q8_0) {
            float amax = 0;
            for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(v[j]));
            const float d = amax / 127.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            std::byte* blk = row + b * 34;
            put16(blk, f32_to_f16(d));
            for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<std::byte>(static_cast<int8_t>(std::lround(v[j] * id)));
        } else if (type == DType::q4_0) {
            float amax = 0, m = 0;
            for (int j = 0; j < 32; ++j) {
                if (std::abs(v[j]) > amax) {
                    amax = std::abs(v[j]);
                    m = v[j];
                }
            }
            const float d = m / -8.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            std::byte* blk = row + b * 18;
            put16(blk, f32_to_f16(d));
            auto q = [&](float f) { return static_cast<uint8_t>(std::min(15, static_cast<int>(f * id + 8.5f))); };
            for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<std::byte>(q(v[j]) | (q(v[j + 16]) << 4));
        } else if (type == DType::q4_1) {
            float lo = v[0], hi = v[0];
            for (int j = 1; j < 32; ++j) {
                lo = std::min(lo, v[j]);
                hi = std::max(hi, v[j]);
            }
            const float d = (hi - lo) / 15.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            std::byte* blk = row + b * 20;
            put16(blk, f32_to_f16(d));
            put16(blk + 2, f32_to_f16(lo));
            auto q = [&](float f) { return static_cast<uint8_t>(std::min(15, static_cast<int>((f - lo) * id + 0.5f))); };
            for (int j = 0; j < 16; ++j) blk[4 + j] = static_cast<std::byte>(q(v[j]) | (q(v[j + 16]) << 4));
        } else {
            throw InputError(fmt::format("cannot store {} rows", dtype_name(type)));
        }
    }
}

}  // namespace tps
