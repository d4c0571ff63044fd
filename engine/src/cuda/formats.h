// The weight and KV formats the CUDA kernels are instantiated for, as the host launchers and the
// kernels both see them (no device code here: the backend's host side includes it too).
#pragma once

#include <cstdint>

namespace tps::cuda {

// A subset of tps::DType: what the kernels read weights in.
enum class WFormat : int { f32, f16, bf16, q8_0, q4_0, q4_1 };

// KV cache elements (KvLayout::dtype).
enum class KvFormat : int { f32, f16, bf16 };

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace tps::cuda
