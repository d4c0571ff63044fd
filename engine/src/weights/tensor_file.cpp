// Slicing over a tensor table: a row range of a matrix is a pointer into the mapped file (no
// copy); a column range is gathered row by row into an owned buffer, on block boundaries.
#include "tensor_file.h"

#include "tpserve/common/check.h"

#include <cstring>

namespace tps::detail {
namespace {

Range resolve(Range r, int64_t n, const std::string& what) {
    if (r.last < 0) r.last = n;
    TPS_CHECK_AS(InputError, r.first >= 0 && r.first <= r.last && r.last <= n, "{}: range [{}, {}) is outside [0, {})",
                 what, r.first, r.last, n);
    return r;
}

}  // namespace

const TensorEntry& TableSource::entry(std::string_view hf_name) const {
    const std::string name = stored_name(hf_name);
    const auto it = tensors_.find(name);
    TPS_CHECK_AS(InputError, it != tensors_.end(), "{}: no tensor {}{}", origin_, name,
                 name == hf_name ? std::string() : fmt::format(" (for {})", hf_name));
    return it->second;
}

bool TableSource::has(std::string_view hf_name) const { return tensors_.contains(stored_name(hf_name)); }

std::vector<int64_t> TableSource::shape(std::string_view hf_name) const { return entry(hf_name).shape; }

DType TableSource::type(std::string_view hf_name) const { return entry(hf_name).type; }

Weight TableSource::matrix(std::string_view hf_name, Range rows, Range cols) const {
    const TensorEntry& e = entry(hf_name);
    const std::string what = fmt::format("{}: {}", origin_, stored_name(hf_name));
    TPS_CHECK_AS(InputError, e.shape.size() == 2, "{} has {} dimensions, not 2", what, e.shape.size());
    TPS_CHECK_AS(InputError, engine_supports(e.type),
                 "{} is stored as {}, which the engine does not compute with ({})", what,
                 dtype_name(e.type), engine_format_names());
    const int64_t n_rows = e.shape[0];
    const int64_t n_cols = e.shape[1];
    rows = resolve(rows, n_rows, what + " rows");
    cols = resolve(cols, n_cols, what + " columns");
    const int64_t block = dtype_layout(e.type).block;
    TPS_CHECK_AS(InputError, cols.first % block == 0 && cols.last % block == 0,
                 "{}: columns [{}, {}) do not fall on {}'s {}-element blocks", what, cols.first, cols.last,
                 dtype_name(e.type), block);
    const int64_t full_row = *matrix_bytes(e.type, 1, n_cols);
    const std::byte* base = e.file->data() + e.offset;

    Weight w;
    w.type = e.type;
    w.rows = rows.last - rows.first;
    w.cols = cols.last - cols.first;
    w.row_bytes = *matrix_bytes(e.type, 1, w.cols);
    const int64_t bytes = w.rows * w.row_bytes;
    bytes_read_ += bytes;
    const std::byte* first = base + rows.first * full_row;
    const bool all_columns = cols.first == 0 && cols.last == n_cols;
    const auto elem_align = static_cast<uintptr_t>(e.type == DType::f32 ? 4 : 2);
    if (all_columns && reinterpret_cast<uintptr_t>(first) % elem_align == 0) {
        w.data = first;  // in place
        return w;
    }
    w.owned = Buffer(bytes, MemoryTag::weights);
    const int64_t col_offset = *matrix_bytes(e.type, 1, cols.first);  // whole blocks before the range
    for (int64_t r = 0; r < w.rows; ++r) {
        std::memcpy(w.owned.as<std::byte>() + r * w.row_bytes, first + r * full_row + col_offset,
                    static_cast<size_t>(w.row_bytes));
    }
    w.data = w.owned.as<const std::byte>();
    return w;
}

Vec TableSource::vector(std::string_view hf_name, Range r) const {
    const TensorEntry& e = entry(hf_name);
    const std::string what = fmt::format("{}: {}", origin_, stored_name(hf_name));
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    TPS_CHECK_AS(InputError, e.shape.size() == 1 || n == e.shape.back(), "{} is not a vector", what);
    TPS_CHECK_AS(InputError, engine_supports(e.type), "{} is stored as {}, which the engine does not read",
                 what, dtype_name(e.type));
    r = resolve(r, n, what);
    const int64_t block = dtype_layout(e.type).block;
    TPS_CHECK_AS(InputError, r.first % block == 0 && r.last % block == 0, "{}: [{}, {}) is not on block boundaries",
                 what, r.first, r.last);
    Vec v;
    v.n = r.last - r.first;
    v.buf = Buffer(v.n * 4, MemoryTag::weights);
    row_to_f32(e.type, e.file->data() + e.offset, r.first, v.n, v.buf.as<float>());
    bytes_read_ += *matrix_bytes(e.type, 1, v.n);
    return v;
}

}  // namespace tps::detail
