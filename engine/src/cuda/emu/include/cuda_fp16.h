// IEEE half as the tpserve CUDA emulator has it: the storage type and the conversions the
// kernels use, rounding as the hardware does (to nearest even; tpserve/engine/numeric.h).
#pragma once

#include "cuda_runtime.h"
#include "tpserve/engine/numeric.h"

struct __half {
    unsigned short __x;
};
struct alignas(4) __half2 {
    __half x, y;
};

inline float __half2float(__half h) { return tps::f16_to_f32(h.__x); }
inline __half __float2half_rn(float f) { return __half{tps::f32_to_f16(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
