// The kernels' format (formats.h) for a weight's DType, on the host side.
#pragma once

#include "formats.h"

#include "tpserve/partition/dtype.h"

#include <optional>

namespace tps::cuda {

// nullopt for a type the kernels do not compute with
inline std::optional<WFormat> kernel_format(DType t) {
    switch (t) {
        case DType::f32: return WFormat::f32;
        case DType::f16: return WFormat::f16;
        case DType::bf16: return WFormat::bf16;
        case DType::int8: return WFormat::int8;
        case DType::q8_0: return WFormat::q8_0;
        case DType::q4_0: return WFormat::q4_0;
        case DType::q4_1: return WFormat::q4_1;
        case DType::q5_0: return WFormat::q5_0;
        case DType::q5_1: return WFormat::q5_1;
        case DType::iq4_nl: return WFormat::iq4_nl;
        case DType::q2_k: return WFormat::q2_k;
        case DType::q3_k: return WFormat::q3_k;
        case DType::q4_k: return WFormat::q4_k;
        case DType::q5_k: return WFormat::q5_k;
        case DType::q6_k: return WFormat::q6_k;
        case DType::iq4_xs: return WFormat::iq4_xs;
        default: return std::nullopt;
    }
}

}  // namespace tps::cuda
