// Quantizing at load: a weight source that reads another and hands out its linear layers' weights
// in the formats a model description gives them (apply_weight_format, `--format`). Each row is
// read whole and converted through f32, so an int8 row's scale is taken over the whole row even
// when a rank loads only some of its columns: tensor-parallel ranks agree on every scale, and a
// split model computes with the same weights as the whole one (docs/planner.md keeps int8's
// scales whole on every rank for this reason). GGML block formats quantize 32 columns at a time,
// so a column slice on block boundaries is the same either way.
#include "tpserve/common/check.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model.h"

#include <algorithm>
#include <exception>
#include <functional>
#include <map>
#include <thread>
#include <vector>

namespace tps {
namespace {

// fn(first, last) over [0, rows) in contiguous ranges, one per usable CPU (at least 256 rows
// each); the first exception any range throws is rethrown once all have finished.
void for_row_ranges(int64_t rows, const std::function<void(int64_t, int64_t)>& fn) {
    const int64_t n = std::clamp<int64_t>(usable_cpus(), 1, std::max<int64_t>(1, rows / 256));
    if (n == 1) return fn(0, rows);
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    for (int64_t i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            try {
                fn(rows * i / n, rows * (i + 1) / n);
            } catch (...) {
                errors[static_cast<size_t>(i)] = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

class ConvertedSource final : public WeightSource {
public:
    ConvertedSource(std::shared_ptr<const WeightSource> inner, std::map<std::string, DType, std::less<>> formats)
        : inner_(std::move(inner)), formats_(std::move(formats)) {}

    bool has(std::string_view name) const override { return inner_->has(name); }
    std::vector<int64_t> shape(std::string_view name) const override { return inner_->shape(name); }
    DType type(std::string_view name) const override {
        const auto it = formats_.find(name);
        return it != formats_.end() ? it->second : inner_->type(name);
    }

    Weight matrix(std::string_view name, Range rows, Range cols) const override {
        const auto it = formats_.find(name);
        if (it == formats_.end() || it->second == inner_->type(name)) return counted(inner_->matrix(name, rows, cols));
        const DType to = it->second;
        // whole rows from the checkpoint (in place where it allows), converted column range by range
        const Weight whole = counted(inner_->matrix(name, rows, {}));
        const int64_t c0 = cols.first, c1 = cols.last < 0 ? whole.cols : cols.last;
        TPS_CHECK_AS(InputError, 0 <= c0 && c0 < c1 && c1 <= whole.cols, "{}: no columns [{}, {}) in {} columns", name,
                     c0, c1, whole.cols);
        const int64_t block = dtype_layout(to).block;
        TPS_CHECK_AS(InputError, c0 % block == 0 && c1 % block == 0,
                     "{}: columns [{}, {}) do not fall on {}'s {}-element blocks", name, c0, c1, dtype_name(to), block);
        Weight out = make_weight(to, whole.rows, c1 - c0, MemoryTag::weights);
        // rows are independent: split them over the CPUs this process may use (a 70B shard is
        // tens of billions of weights)
        for_row_ranges(whole.rows, [&](int64_t first, int64_t last) {
            std::vector<float> row(static_cast<size_t>(whole.cols));
            for (int64_t r = first; r < last; ++r) {
                weight_row_to_f32(whole, r, 0, whole.cols, row.data());
                const float* slice = row.data() + c0;
                if (to == DType::int8) {
                    uint16_t scale = 0;
                    try {
                        scale = int8_row_scale_bits(row.data(), whole.cols);
                    } catch (const InputError& e) {
                        throw InputError(fmt::format("{}: row {}: {}", name, r + rows.first, e.what()));
                    }
                    store_int8_row(out, r, slice, scale);
                } else {
                    store_row(out, r, slice);
                }
            }
        });
        return out;
    }

    Vec vector(std::string_view name, Range r) const override {
        Vec v = inner_->vector(name, r);
        bytes_read_ = inner_->bytes_read();
        return v;
    }

private:
    Weight counted(Weight w) const {
        bytes_read_ = inner_->bytes_read();
        return w;
    }

    std::shared_ptr<const WeightSource> inner_;
    std::map<std::string, DType, std::less<>> formats_;  // tensors to convert, by HF name
};

}  // namespace

std::shared_ptr<const WeightSource> WeightSource::converted(std::shared_ptr<const WeightSource> inner,
                                                            const ModelDesc& model) {
    TPS_CHECK(inner != nullptr, "no weight source to convert");
    std::map<std::string, DType, std::less<>> formats;
    for (const auto& layer : model.layer_tensors) {
        for (const auto& t : layer) {
            for (const std::string& name : checkpoint_names(t)) {  // (an MoE spec: each expert's)
                if (!t.linear || !inner->has(name) || inner->type(name) == t.dtype) continue;
                TPS_CHECK_AS(UsageError, engine_stores(t.dtype),
                             "--format {}: the planner can plan for it, but the engine does not quantize to it ({})",
                             dtype_name(t.dtype), engine_store_names());
                formats.emplace(name, t.dtype);
            }
        }
    }
    return std::make_shared<ConvertedSource>(std::move(inner), std::move(formats));
}

}  // namespace tps
