// GGML block formats, one block at a time (layouts from ggml-common.h; values as ggml-quants.c's
// dequantize_row_* computes them). Little-endian f16 fields throughout.
//   q8_0  32 elements, 34 bytes:  f16 d; i8 q[32]                    x = d * q
//   q4_0  32 elements, 18 bytes:  f16 d; u8 q[16]                    x = d * (nibble - 8)
//   q4_1  32 elements, 20 bytes:  f16 d; f16 m; u8 q[16]             x = d * nibble + m
//   q5_0  32 elements, 22 bytes:  f16 d; u32 qh; u8 q[16]            x = d * (nibble | bit << 4) - 16)
//   q5_1  32 elements, 24 bytes:  f16 d; f16 m; u32 qh; u8 q[16]     x = d * (nibble | bit << 4) + m
//     (element j < 16 is the low nibble of q[j], j >= 16 the high nibble of q[j - 16]; q5's fifth
//     bit of element j is bit j of qh)
//   q2_k 256 elements, 84 bytes:  u8 scales[16]; u8 q[64]; f16 d; f16 dmin
//     16 sub-blocks of 16, scales[s] = 4-bit scale | 4-bit min << 4; x = d * scale * q - dmin * min
//   q3_k 256 elements, 110 bytes: u8 hmask[32]; u8 q[64]; u8 scales[12]; f16 d
//     16 sub-blocks of 16, signed 6-bit scales (q3k_scale); x = d * scale * (q - 4), q 3 bits: two
//     in q[], the third in hmask
//   q4_k 256 elements, 144 bytes: f16 d; f16 dmin; u8 scales[12]; u8 q[128]
//     8 sub-blocks of 32, 6-bit scales and mins (k4_scale_min); x = d * scale * q - dmin * min
//   q5_k 256 elements, 176 bytes: f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 q[128]
//     as q4_k with a fifth bit per element in qh
//   q6_k 256 elements, 210 bytes: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
//     16 sub-blocks of 16; x = d * scale * (q - 32), q 6 bits: four in ql, two in qh
//   iq4_nl 32 elements, 18 bytes: f16 d; u8 q[16]    x = d * kIq4Values[nibble] (nibbles as q4_0)
//   iq4_xs 256 elements, 136 bytes: f16 d; u16 scales_h; u8 scales_l[4]; u8 q[128]
//     8 sub-blocks of 32, 6-bit scales (iq4xs_scale); x = d * scale * kIq4Values[nibble], the
//     sub-block's 16 bytes holding its first 16 elements low, the next 16 high
// In the K-quants, a 128-element half n uses q[32n + l] (q2_k, q3_k: element 32g + l of the half
// at bits 2g), q4_k/q5_k's 64-element chunk c uses q[32c + l] (low nibble, then high), and q6_k's
// half uses ql[64n + l] and ql[64n + 32 + l] (low nibbles, then high) with qh[32n + l] (bits 2g).
#include "ggml_blocks.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/numeric.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace tps::ggml {
namespace {

const uint8_t* bytes(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }
uint8_t* bytes(std::byte* p) { return reinterpret_cast<uint8_t*>(p); }
float half_at(const std::byte* p) { return f16_to_f32(load_u16(p)); }
void put_half(std::byte* p, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(p, &h, 2);
}
// A value stored as f16 and read back: what the decoder will multiply by.
float as_half(float v) { return f16_to_f32(f32_to_f16(v)); }
int nearest(float v) { return static_cast<int>(std::lround(v)); }

// --- decoders ---------------------------------------------------------------------------------

void decode_q5(const std::byte* blk, bool with_min, float* out) {
    const float d = half_at(blk);
    const float m = with_min ? half_at(blk + 2) : 0.0f;
    const std::byte* rest = blk + (with_min ? 4 : 2);
    uint32_t qh;
    std::memcpy(&qh, rest, 4);
    const uint8_t* q = bytes(rest + 4);
    const int offset = with_min ? 0 : 16;
    for (int j = 0; j < 16; ++j) {
        const int lo = (q[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
        const int hi = (q[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
        out[j] = d * static_cast<float>(lo - offset) + m;
        out[j + 16] = d * static_cast<float>(hi - offset) + m;
    }
}

void decode_q2_k(const std::byte* blk, float* out) {
    const uint8_t* scales = bytes(blk);
    const uint8_t* q = bytes(blk + 16);
    const float d = half_at(blk + 80), dmin = half_at(blk + 82);
    for (int i = 0; i < 256; ++i) {
        const int n = i / 128, g = (i % 128) / 32, l = i % 32;
        const int sc = scales[i / 16];
        const int v = (q[32 * n + l] >> (2 * g)) & 3;
        out[i] = d * static_cast<float>(sc & 0xF) * static_cast<float>(v) - dmin * static_cast<float>(sc >> 4);
    }
}

void decode_q3_k(const std::byte* blk, float* out) {
    const uint8_t* hmask = bytes(blk);
    const uint8_t* q = bytes(blk + 32);
    const uint8_t* scales = bytes(blk + 96);
    const float d = half_at(blk + 108);
    for (int i = 0; i < 256; ++i) {
        const int n = i / 128, g = (i % 128) / 32, l = i % 32;
        const int low = (q[32 * n + l] >> (2 * g)) & 3;
        const int high = (hmask[l] >> (4 * n + g)) & 1;
        out[i] = d * static_cast<float>(q3k_scale(i / 16, scales)) * static_cast<float>((low | high << 2) - 4);
    }
}

void decode_q45_k(const std::byte* blk, bool five, float* out) {
    const float d = half_at(blk), dmin = half_at(blk + 2);
    const uint8_t* scales = bytes(blk + 4);
    const uint8_t* qh = bytes(blk + 16);
    const uint8_t* q = bytes(blk + (five ? 48 : 16));
    for (int i = 0; i < 256; ++i) {
        const int s = i / 32, c = i / 64, l = i % 32;
        int sc, mn;
        k4_scale_min(s, scales, sc, mn);
        int v = (q[32 * c + l] >> (4 * (s & 1))) & 0xF;
        if (five) v |= ((qh[l] >> s) & 1) << 4;
        out[i] = d * static_cast<float>(sc) * static_cast<float>(v) - dmin * static_cast<float>(mn);
    }
}

void decode_iq4(const float d, const uint8_t* q, float* out) {
    for (int j = 0; j < 16; ++j) {
        out[j] = d * static_cast<float>(kIq4Values[q[j] & 0xF]);
        out[j + 16] = d * static_cast<float>(kIq4Values[q[j] >> 4]);
    }
}

void decode_iq4_xs(const std::byte* blk, float* out) {
    const float d = half_at(blk);
    const uint16_t scales_h = load_u16(blk + 2);
    const uint8_t* scales_l = bytes(blk + 4);
    for (int s = 0; s < 8; ++s) {
        decode_iq4(d * static_cast<float>(iq4xs_scale(s, scales_h, scales_l)), bytes(blk + 8 + 16 * s), out + 32 * s);
    }
}

void decode_q6_k(const std::byte* blk, float* out) {
    const uint8_t* ql = bytes(blk);
    const uint8_t* qh = bytes(blk + 128);
    const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
    const float d = half_at(blk + 208);
    for (int i = 0; i < 256; ++i) {
        const int n = i / 128, g = (i % 128) / 32, l = i % 32;
        const int low = (ql[64 * n + 32 * (g & 1) + l] >> (4 * (g >> 1))) & 0xF;
        const int high = (qh[32 * n + l] >> (2 * g)) & 3;
        out[i] = d * static_cast<float>(scales[i / 16]) * static_cast<float>((low | high << 4) - 32);
    }
}

// --- encoders ---------------------------------------------------------------------------------

// A block's value of largest magnitude, its sign kept (ggml's symmetric quantizers map it to the
// most negative level, which has one step more room than the positive side).
float signed_absmax(const float* x, int n) {
    float m = 0;
    for (int j = 0; j < n; ++j) {
        if (std::abs(x[j]) > std::abs(m)) m = x[j];
    }
    return m;
}

void encode_q5(const float* x, bool with_min, std::byte* blk) {
    float d, m = 0;
    if (with_min) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < 32; ++j) {
            lo = std::min(lo, x[j]);
            hi = std::max(hi, x[j]);
        }
        d = (hi - lo) / 31.0f;
        m = lo;
        put_half(blk, d);
        put_half(blk + 2, m);
    } else {
        d = signed_absmax(x, 32) / -16.0f;
        put_half(blk, d);
    }
    const float id = d != 0 ? 1.0f / d : 0.0f;
    std::byte* rest = blk + (with_min ? 4 : 2);
    uint8_t* q = bytes(rest + 4);
    uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
        auto level = [&](float v) {
            return with_min ? std::min(31, static_cast<int>((v - m) * id + 0.5f))
                            : std::clamp(static_cast<int>(v * id + 16.5f), 0, 31);
        };
        const int lo = level(x[j]), hi = level(x[j + 16]);
        q[j] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        qh |= static_cast<uint32_t>(lo >> 4) << j;
        qh |= static_cast<uint32_t>(hi >> 4) << (j + 16);
    }
    std::memcpy(rest, &qh, 4);
}

// Asymmetric sub-blocks (q2_k, q4_k, q5_k): x ~ d * scale[s] * q - dmin * min[s], q in [0, levels],
// scale and min integers in [0, steps]. Each sub-block's range covers its values, its low end
// never above 0 (the min is stored non-negative); the levels are then fitted to the stored
// (rounded) scale and min.
void fit_asymmetric(const float* x, int n_sub, int sub, int levels, int steps, float& d, float& dmin, int* scale,
                    int* min, int* q) {
    float sc[16], mn[16];
    float max_sc = 0, max_mn = 0;
    for (int s = 0; s < n_sub; ++s) {
        float lo = 0, hi = x[s * sub];
        for (int j = 0; j < sub; ++j) {
            lo = std::min(lo, x[s * sub + j]);
            hi = std::max(hi, x[s * sub + j]);
        }
        sc[s] = (hi - lo) / static_cast<float>(levels);
        mn[s] = -lo;
        max_sc = std::max(max_sc, sc[s]);
        max_mn = std::max(max_mn, mn[s]);
    }
    d = as_half(max_sc / static_cast<float>(steps));
    dmin = as_half(max_mn / static_cast<float>(steps));
    for (int s = 0; s < n_sub; ++s) {
        scale[s] = d > 0 ? std::clamp(nearest(sc[s] / d), 0, steps) : 0;
        min[s] = dmin > 0 ? std::clamp(nearest(mn[s] / dmin), 0, steps) : 0;
        const float step = d * static_cast<float>(scale[s]);
        const float offset = dmin * static_cast<float>(min[s]);
        for (int j = 0; j < sub; ++j) {
            const int i = s * sub + j;
            q[i] = step > 0 ? std::clamp(nearest((x[i] + offset) / step), 0, levels) : 0;
        }
    }
}

// Symmetric sub-blocks (q3_k, q6_k): x ~ d * scale[s] * q, q in [lowest, -lowest - 1], scale a
// signed integer within +-max_scale. Each sub-block's value of largest magnitude maps to `lowest`.
void fit_symmetric(const float* x, int lowest, int max_scale, float& d, int* scale, int* q) {
    float sc[16];
    float amax = 0;
    for (int s = 0; s < 16; ++s) {
        sc[s] = signed_absmax(x + 16 * s, 16) / static_cast<float>(lowest);
        amax = std::max(amax, std::abs(sc[s]));
    }
    d = as_half(amax / static_cast<float>(max_scale));
    for (int s = 0; s < 16; ++s) {
        scale[s] = d > 0 ? std::clamp(nearest(sc[s] / d), -max_scale, max_scale) : 0;
        const float step = d * static_cast<float>(scale[s]);
        for (int j = 0; j < 16; ++j) {
            const int i = 16 * s + j;
            q[i] = step != 0 ? std::clamp(nearest(x[i] / step), lowest, -lowest - 1) : 0;
        }
    }
}

void encode_q2_k(const float* x, std::byte* blk) {
    float d, dmin;
    int scale[16], min[16], q[256];
    fit_asymmetric(x, 16, 16, 3, 15, d, dmin, scale, min, q);
    std::memset(blk, 0, 84);
    uint8_t* scales = bytes(blk);
    uint8_t* qs = bytes(blk + 16);
    for (int s = 0; s < 16; ++s) scales[s] = static_cast<uint8_t>(scale[s] | min[s] << 4);
    for (int i = 0; i < 256; ++i) qs[32 * (i / 128) + i % 32] |= static_cast<uint8_t>(q[i] << (2 * ((i % 128) / 32)));
    put_half(blk + 80, d);
    put_half(blk + 82, dmin);
}

void encode_q3_k(const float* x, std::byte* blk) {
    float d;
    int scale[16], q[256];
    fit_symmetric(x, -4, 31, d, scale, q);
    std::memset(blk, 0, 110);
    uint8_t* hmask = bytes(blk);
    uint8_t* qs = bytes(blk + 32);
    uint8_t* scales = bytes(blk + 96);
    for (int j = 0; j < 16; ++j) {
        const int u = scale[j] + 32;
        scales[j < 8 ? j : j - 8] |= static_cast<uint8_t>((u & 0xF) << (j < 8 ? 0 : 4));
        scales[8 + (j & 3)] |= static_cast<uint8_t>((u >> 4) << (2 * (j >> 2)));
    }
    for (int i = 0; i < 256; ++i) {
        const int n = i / 128, g = (i % 128) / 32, l = i % 32;
        const int u = q[i] + 4;
        qs[32 * n + l] |= static_cast<uint8_t>((u & 3) << (2 * g));
        hmask[l] |= static_cast<uint8_t>((u >> 2) << (4 * n + g));
    }
    put_half(blk + 108, d);
}

void encode_q45_k(const float* x, bool five, std::byte* blk) {
    float d, dmin;
    int scale[8], min[8], q[256];
    fit_asymmetric(x, 8, 32, five ? 31 : 15, 63, d, dmin, scale, min, q);
    std::memset(blk, 0, five ? 176 : 144);
    put_half(blk, d);
    put_half(blk + 2, dmin);
    uint8_t* scales = bytes(blk + 4);
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            scales[j] |= static_cast<uint8_t>(scale[j]);
            scales[j + 4] |= static_cast<uint8_t>(min[j]);
        } else {
            scales[j + 4] = static_cast<uint8_t>((scale[j] & 0xF) | (min[j] & 0xF) << 4);
            scales[j - 4] |= static_cast<uint8_t>((scale[j] >> 4) << 6);
            scales[j] |= static_cast<uint8_t>((min[j] >> 4) << 6);
        }
    }
    uint8_t* qh = bytes(blk + 16);
    uint8_t* qs = bytes(blk + (five ? 48 : 16));
    for (int i = 0; i < 256; ++i) {
        const int s = i / 32, c = i / 64, l = i % 32;
        qs[32 * c + l] |= static_cast<uint8_t>((q[i] & 0xF) << (4 * (s & 1)));
        if (five) qh[l] |= static_cast<uint8_t>((q[i] >> 4) << s);
    }
}

void encode_q6_k(const float* x, std::byte* blk) {
    float d;
    int scale[16], q[256];
    fit_symmetric(x, -32, 127, d, scale, q);
    std::memset(blk, 0, 210);
    uint8_t* ql = bytes(blk);
    uint8_t* qh = bytes(blk + 128);
    auto* scales = reinterpret_cast<int8_t*>(blk + 192);
    for (int s = 0; s < 16; ++s) scales[s] = static_cast<int8_t>(scale[s]);
    for (int i = 0; i < 256; ++i) {
        const int n = i / 128, g = (i % 128) / 32, l = i % 32;
        const int u = q[i] + 32;
        ql[64 * n + 32 * (g & 1) + l] |= static_cast<uint8_t>((u & 0xF) << (4 * (g >> 1)));
        qh[32 * n + l] |= static_cast<uint8_t>((u >> 4) << (2 * g));
    }
    put_half(blk + 208, d);
}

}  // namespace

void decode_block(DType type, const std::byte* blk, float* out) {
    switch (type) {
        case DType::q8_0: {
            const float d = half_at(blk);
            const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
            for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(q[j]);
            return;
        }
        case DType::q4_0: {
            const float d = half_at(blk);
            const uint8_t* q = bytes(blk + 2);
            for (int j = 0; j < 16; ++j) out[j] = d * static_cast<float>((q[j] & 0x0F) - 8);
            for (int j = 0; j < 16; ++j) out[16 + j] = d * static_cast<float>((q[j] >> 4) - 8);
            return;
        }
        case DType::q4_1: {
            const float d = half_at(blk);
            const float m = half_at(blk + 2);
            const uint8_t* q = bytes(blk + 4);
            for (int j = 0; j < 16; ++j) out[j] = d * static_cast<float>(q[j] & 0x0F) + m;
            for (int j = 0; j < 16; ++j) out[16 + j] = d * static_cast<float>(q[j] >> 4) + m;
            return;
        }
        case DType::q5_0: return decode_q5(blk, false, out);
        case DType::q5_1: return decode_q5(blk, true, out);
        case DType::q2_k: return decode_q2_k(blk, out);
        case DType::q3_k: return decode_q3_k(blk, out);
        case DType::q4_k: return decode_q45_k(blk, false, out);
        case DType::q5_k: return decode_q45_k(blk, true, out);
        case DType::q6_k: return decode_q6_k(blk, out);
        case DType::iq4_nl: return decode_iq4(half_at(blk), bytes(blk + 2), out);
        case DType::iq4_xs: return decode_iq4_xs(blk, out);
        default: break;
    }
    throw InputError(fmt::format("{} blocks are not read by the engine", dtype_name(type)));
}

void encode_block(DType type, const float* x, std::byte* blk) {
    switch (type) {
        case DType::q8_0: {
            float amax = 0;
            for (int j = 0; j < 32; ++j) amax = std::max(amax, std::abs(x[j]));
            const float d = amax / 127.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            put_half(blk, d);
            for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<std::byte>(static_cast<int8_t>(std::lround(x[j] * id)));
            return;
        }
        case DType::q4_0: {
            const float d = signed_absmax(x, 32) / -8.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            put_half(blk, d);
            auto q = [&](float f) { return static_cast<uint8_t>(std::min(15, static_cast<int>(f * id + 8.5f))); };
            for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<std::byte>(q(x[j]) | (q(x[j + 16]) << 4));
            return;
        }
        case DType::q4_1: {
            float lo = x[0], hi = x[0];
            for (int j = 1; j < 32; ++j) {
                lo = std::min(lo, x[j]);
                hi = std::max(hi, x[j]);
            }
            const float d = (hi - lo) / 15.0f;
            const float id = d != 0 ? 1.0f / d : 0.0f;
            put_half(blk, d);
            put_half(blk + 2, lo);
            auto q = [&](float f) { return static_cast<uint8_t>(std::min(15, static_cast<int>((f - lo) * id + 0.5f))); };
            for (int j = 0; j < 16; ++j) blk[4 + j] = static_cast<std::byte>(q(x[j]) | (q(x[j + 16]) << 4));
            return;
        }
        case DType::q5_0: return encode_q5(x, false, blk);
        case DType::q5_1: return encode_q5(x, true, blk);
        case DType::q2_k: return encode_q2_k(x, blk);
        case DType::q3_k: return encode_q3_k(x, blk);
        case DType::q4_k: return encode_q45_k(x, false, blk);
        case DType::q5_k: return encode_q45_k(x, true, blk);
        case DType::q6_k: return encode_q6_k(x, blk);
        default: break;
    }
    throw InputError(fmt::format("cannot store {} rows", dtype_name(type)));
}

}  // namespace tps::ggml
