// bfloat16 as the tpserve CUDA emulator has it: the storage type and the conversions the kernels
// use, rounding to nearest even (tpserve/engine/numeric.h).
#pragma once

#include "cuda_runtime.h"
#include "tpserve/engine/numeric.h"

struct __nv_bfloat16 {
    unsigned short __x;
};

inline float __bfloat162float(__nv_bfloat16 h) { return tps::bf16_to_f32(h.__x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{tps::f32_to_bf16(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
