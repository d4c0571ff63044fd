// A weight matrix as a block of memory: its size with int8's trailing scales, making one and
// storing rows into it, reading a row back with its scale applied. Weight-only int8 is the
// planner's format (docs/planner.md): symmetric, one f16 scale per output row, chosen so the
// row's largest magnitude maps to 127 or just inside it.
#include "tpserve/common/check.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/engine/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tps {

int64_t Weight::bytes() const noexcept {
    return rows * row_bytes + (type == DType::int8 ? rows * 2 : 0);
}

float Weight::scale(int64_t r) const noexcept {
    return type == DType::int8 ? f16_to_f32(load_u16(scales() + 2 * r)) : 1.0f;
}

Weight Weight::alias() const {
    Weight w;
    w.type = type;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = row_bytes;
    w.data = data;
    w.device = device;
    return w;
}

std::optional<int64_t> weight_row_bytes(DType type, int64_t cols) noexcept {
    const auto bytes = matrix_bytes(type, 1, cols);
    if (!bytes) return std::nullopt;
    return *bytes - dtype_layout(type).row_extra_bytes - dtype_layout(type).tensor_extra_bytes;
}

Weight make_weight(DType type, int64_t rows, int64_t cols, MemoryTag tag) {
    TPS_CHECK_AS(UsageError, engine_stores(type), "{} is not a weight format the engine writes ({})", dtype_name(type),
                 engine_store_names());
    const auto row_bytes = weight_row_bytes(type, cols);
    TPS_CHECK_AS(UsageError, rows >= 0 && row_bytes.has_value(), "a {} x {} matrix does not split into {} blocks",
                 rows, cols, dtype_name(type));
    Weight w;
    w.type = type;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = *row_bytes;
    w.owned = Buffer(w.bytes(), tag);
    w.data = w.owned.as<const std::byte>();
    return w;
}

uint16_t int8_scale_bits(float amax) {
    TPS_CHECK_AS(InputError, std::isfinite(amax), "int8: a row holds a weight that is not finite ({})", amax);
    if (amax == 0) return 0;
    TPS_CHECK_AS(InputError, amax / 127.0f <= 65504.0f, "int8: a row's largest weight {} needs a scale beyond f16's range",
                 amax);
    uint16_t bits = f32_to_f16(amax / 127.0f);
    // rounding may have gone down: step up (positive f16 bits grow with the value)
    while (f16_to_f32(bits) * 127.0f < amax) ++bits;
    return bits;
}

uint16_t int8_row_scale_bits(const float* x, int64_t n) {
    float amax = 0;
    for (int64_t c = 0; c < n; ++c) {
        if (!std::isfinite(x[c])) return int8_scale_bits(x[c]);  // refused, naming it (max would drop a NaN)
        amax = std::max(amax, std::abs(x[c]));
    }
    return int8_scale_bits(amax);
}

void store_int8_row(Weight& w, int64_t r, const float* x, uint16_t scale_bits) {
    TPS_CHECK(w.type == DType::int8 && w.owned.data() != nullptr && 0 <= r && r < w.rows,
              "store_int8_row: row {} of a {} x {} {} matrix", r, w.rows, w.cols, dtype_name(w.type));
    auto* base = w.owned.as<std::byte>();
    auto* q = reinterpret_cast<int8_t*>(base + r * w.row_bytes);
    const float scale = f16_to_f32(scale_bits);
    // x / scale rounded half to even, as torch.round(w / scale) does: a division, not a multiply
    // by the inverse, so the two agree on every weight (tests/fixtures/make_int8_reference.py)
    for (int64_t c = 0; c < w.cols; ++c) {
        const float v = scale != 0 ? std::nearbyint(x[c] / scale) : 0.0f;
        q[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
    std::memcpy(base + w.rows * w.row_bytes + 2 * r, &scale_bits, 2);
}

void store_row(Weight& w, int64_t r, const float* x) {
    TPS_CHECK(w.owned.data() != nullptr && 0 <= r && r < w.rows, "store_row: row {} of a {} x {} matrix it does not own",
              r, w.rows, w.cols);
    if (w.type != DType::int8) {
        f32_to_row(w.type, x, w.cols, w.owned.as<std::byte>() + r * w.row_bytes);
        return;
    }
    store_int8_row(w, r, x, int8_row_scale_bits(x, w.cols));
}

void weight_row_to_f32(const Weight& w, int64_t r, int64_t first, int64_t n, float* out) {
    row_to_f32(w.type, w.row(r), first, n, out);
    if (w.type != DType::int8) return;
    const float s = w.scale(r);
    for (int64_t i = 0; i < n; ++i) out[i] *= s;
}

}  // namespace tps
