// What every Backend has unless it says otherwise (backend.h): the weight formats the engine
// reads, and the ops of mixture-of-experts layers, refused by a backend that does not compute them
// (LlamaModel refuses such a model on it when the model is built, so these are never reached
// there).
#include "tpserve/engine/backend.h"

#include "tpserve/common/check.h"

namespace tps {

bool Backend::computes_with(DType t) const noexcept { return engine_supports(t); }

std::string Backend::weight_formats() const { return std::string(engine_format_names()); }

void Backend::zero(Tensor x) {
    (void)x;
    TPS_CHECK_AS(UsageError, false, "the {} backend does not compute mixture-of-experts layers (zero)", name());
}

void Backend::add_rows_scaled(const Tensor& y, std::span<const int64_t> rows, std::span<const float> scales, Tensor out) {
    (void)y, (void)rows, (void)scales, (void)out;
    TPS_CHECK_AS(UsageError, false, "the {} backend does not compute mixture-of-experts layers (add_rows_scaled)", name());
}

}  // namespace tps
