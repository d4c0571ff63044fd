// Seeded random weights served through the WeightSource interface, so the sharded loader reads
// them like a checkpoint: each element is a function of (seed, tensor name, row, column), never
// of the slice asked for, so ranks that load different shards agree on the model they split.
// Matrices are uniform with standard deviation 0.02 (transformers' initializer range), norm
// gains 1, biases small. For benchmarks of shapes nobody ships a file for.
#include "tpserve/common/check.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/model.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace tps {
namespace {

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

class RandomSource final : public WeightSource {
public:
    RandomSource(const ModelDesc& m, DType type, uint64_t seed) : seed_(seed) {
        TPS_CHECK_AS(UsageError, engine_stores(type), "random weights: {} is not a format the engine quantizes to ({})",
                     dtype_name(type), engine_store_names());
        for_each_tensor(m, [&](const TensorSpec& t) {
            for (const std::string& name : checkpoint_names(t)) {  // (an MoE spec: each expert's)
                tensors_[name] = t.in == 1 ? std::vector<int64_t>{t.out} : std::vector<int64_t>{t.out, t.in};
                // int8 is for the layers' projections (as --format int8): the embedding and LM head bf16
                types_[name] = t.in == 1 ? DType::f32 : type == DType::int8 && !t.linear ? DType::bf16 : type;
            }
        });
    }

    bool has(std::string_view name) const override { return tensors_.find(name) != tensors_.end(); }
    std::vector<int64_t> shape(std::string_view name) const override { return find(name); }
    DType type(std::string_view name) const override {
        (void)find(name);
        return types_.find(name)->second;
    }

    Weight matrix(std::string_view name, Range rows, Range cols) const override {
        const auto& s = find(name);
        TPS_CHECK(s.size() == 2, "random weights: {} is not a matrix", name);
        const int64_t r0 = rows.first, r1 = rows.last < 0 ? s[0] : rows.last;
        const int64_t c0 = cols.first, c1 = cols.last < 0 ? s[1] : cols.last;
        TPS_CHECK(0 <= r0 && r0 < r1 && r1 <= s[0] && 0 <= c0 && c0 < c1 && c1 <= s[1],
                  "random weights: {} has no rows [{}, {}) x columns [{}, {})", name, r0, r1, c0, c1);
        Weight w = make_weight(type(name), r1 - r0, c1 - c0, MemoryTag::weights);
        const uint64_t base = seed_ ^ mix(std::hash<std::string_view>{}(name));
        // uniform on [-a, a] has standard deviation a / sqrt(3)
        const float scale = 0.02f * std::sqrt(3.0f) / static_cast<float>(uint64_t{1} << 23);
        // int8 takes the whole row's scale, whatever columns are asked for (as quantizing at load
        // does), so the ranks of a split agree: the whole row is made, the slice stored
        const bool int8 = w.type == DType::int8;
        const int64_t first = int8 ? 0 : c0, last = int8 ? s[1] : c1;
        std::vector<float> row(static_cast<size_t>(last - first));
        for (int64_t r = r0; r < r1; ++r) {
            const uint64_t row_key = mix(base ^ static_cast<uint64_t>(r));
            for (int64_t c = first; c < last; ++c) {
                const auto bits = static_cast<int64_t>(mix(row_key + static_cast<uint64_t>(c)) >> 40) - (int64_t{1} << 23);
                row[static_cast<size_t>(c - first)] = static_cast<float>(bits) * scale;
            }
            if (int8) {
                store_int8_row(w, r - r0, row.data() + c0, int8_row_scale_bits(row.data(), s[1]));
            } else {
                store_row(w, r - r0, row.data());
            }
        }
        bytes_read_ += w.bytes();
        return w;
    }

    Vec vector(std::string_view name, Range r) const override {
        const auto& s = find(name);
        TPS_CHECK(s.size() == 1, "random weights: {} is not a vector", name);
        const int64_t a = r.first, b = r.last < 0 ? s[0] : r.last;
        TPS_CHECK(0 <= a && a < b && b <= s[0], "random weights: {} has no elements [{}, {})", name, a, b);
        Vec v;
        v.n = b - a;
        v.buf = Buffer(v.n * 4, MemoryTag::weights);
        const bool gain = name.find("norm") != std::string_view::npos;
        const uint64_t base = seed_ ^ mix(std::hash<std::string_view>{}(name));
        for (int64_t i = a; i < b; ++i) {
            const double u = static_cast<double>(mix(base ^ static_cast<uint64_t>(i)) >> 11) / 9007199254740992.0;
            v.buf.as<float>()[i - a] = gain ? 1.0f : static_cast<float>(0.02 * (u - 0.5));
        }
        bytes_read_ += v.n * 4;
        return v;
    }

private:
    const std::vector<int64_t>& find(std::string_view name) const {
        const auto it = tensors_.find(name);
        TPS_CHECK_AS(InputError, it != tensors_.end(), "random weights: the model has no tensor {}", name);
        return it->second;
    }

    uint64_t seed_;
    std::map<std::string, std::vector<int64_t>, std::less<>> tensors_;
    std::map<std::string, DType, std::less<>> types_;
};

}  // namespace

std::shared_ptr<const WeightSource> WeightSource::random(const ModelDesc& model, DType type, uint64_t seed) {
    return std::make_shared<RandomSource>(model, type, seed);
}

}  // namespace tps
