// Reading the fixtures' reference.json (tests/fixtures/make_fixtures.py): base64 float32 logits
// (and base64 bytes), and the comparison every engine test uses — the largest
// |ours - reference| of a row within `rel` of the row's largest |reference| (at least 1).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace tps::testing {

inline std::string decode_base64(const std::string& s) {
    static const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string bytes;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : s) {
        if (c == '=') break;
        const auto v = chars.find(c);
        if (v == std::string::npos) continue;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            bytes.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
    }
    return bytes;
}

inline std::vector<float> decode_base64_floats(const std::string& s) {
    const std::string bytes = decode_base64(s);
    std::vector<float> out(bytes.size() / 4);
    std::memcpy(out.data(), bytes.data(), out.size() * 4);
    return out;
}

// ::testing::AssertionSuccess when max |ours - ref| <= rel * max(1, max |ref|) over the row.
inline ::testing::AssertionResult row_close(const float* ours, const float* ref, int64_t n, float rel) {
    float scale = 1.0f;
    float worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; ++i) {
        scale = std::max(scale, std::abs(ref[i]));
        const float d = std::abs(ours[i] - ref[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
        }
    }
    if (worst <= rel * scale) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "largest difference " << worst << " at column " << at << " (ours "
                                         << ours[at] << ", reference " << ref[at] << "), allowed " << rel * scale;
}

}  // namespace tps::testing
