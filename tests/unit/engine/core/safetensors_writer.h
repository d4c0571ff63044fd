// Writes safetensors files for tests (header JSON + data, as the format specifies), so readers and
// the forward pass can be exercised on models made on the spot.
#pragma once

#include "tpserve/engine/numeric.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace tps::test {

class SafetensorsWriter {
public:
    // dtype: "F32", "F16" or "BF16"; values are given as floats and rounded to the dtype
    void add(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values,
             const std::string& dtype = "F32") {
        const size_t begin = data_.size();
        for (float v : values) {
            if (dtype == "F32") {
                append(&v, 4);
            } else if (dtype == "F16") {
                const uint16_t h = f32_to_f16(v);
                append(&h, 2);
            } else {
                const uint16_t h = f32_to_bf16(v);
                append(&h, 2);
            }
        }
        header_[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data_.size()}}};
    }
    void write(const std::filesystem::path& path) const {
        std::string h = header_.dump();
        while ((h.size() + 8) % 8 != 0) h += ' ';
        const uint64_t n = h.size();
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(&n), 8);
        out.write(h.data(), static_cast<std::streamsize>(h.size()));
        out.write(data_.data(), static_cast<std::streamsize>(data_.size()));
    }

private:
    void append(const void* p, size_t n) { data_.append(static_cast<const char*>(p), n); }
    nlohmann::json header_ = nlohmann::json::object();
    std::string data_;
};

inline std::vector<float> random_values(size_t n, uint64_t seed, float scale = 1.0f) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

}  // namespace tps::test
