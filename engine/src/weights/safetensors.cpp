// Safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
// data_offsets: [begin, end]}, "__metadata__": {...}}, then the data. Sharded checkpoints list
// name -> file in model.safetensors.index.json. Every offset and size is checked against the
// file before use: a truncated or corrupt file is an InputError naming the tensor.
#include "tensor_file.h"

#include "tpserve/common/check.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>

namespace tps::detail {
namespace {

constexpr uint64_t kMaxHeader = uint64_t{100} << 20;

std::optional<DType> safetensors_dtype(const std::string& s) {
    if (s == "F32") return DType::f32;
    if (s == "F16") return DType::f16;
    if (s == "BF16") return DType::bf16;
    if (s == "F64") return DType::f64;
    if (s == "I8") return DType::i8;
    if (s == "I16") return DType::i16;
    if (s == "I32") return DType::i32;
    if (s == "I64") return DType::i64;
    if (s == "F8_E4M3") return DType::fp8;
    return std::nullopt;
}

class SafetensorsSource final : public TableSource {
public:
    explicit SafetensorsSource(const std::filesystem::path& dir) {
        namespace fs = std::filesystem;
        origin_ = dir.string();
        const fs::path index = dir / "model.safetensors.index.json";
        const fs::path single = dir / "model.safetensors";
        if (fs::exists(index)) {
            std::ifstream in(index);
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(in);
            } catch (const nlohmann::json::exception& e) {
                throw InputError(fmt::format("{}: not valid JSON: {}", index.string(), e.what()));
            }
            TPS_CHECK_AS(InputError, j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                         "{}: no \"weight_map\" object", index.string());
            std::map<std::string, std::vector<std::string>> by_file;
            for (const auto& [name, file] : j["weight_map"].items()) {
                TPS_CHECK_AS(InputError, file.is_string(), "{}: weight_map[{}] is not a file name", index.string(), name);
                by_file[file.get<std::string>()].push_back(name);
            }
            for (const auto& [file, names] : by_file) {
                TPS_CHECK_AS(InputError, file.find('/') == std::string::npos && file.find("..") == std::string::npos,
                             "{}: shard name \"{}\" must be a file in the same directory", index.string(), file);
                add_file(dir / file, &names);
            }
        } else {
            TPS_CHECK_AS(InputError, fs::exists(single), "{}: neither model.safetensors nor model.safetensors.index.json",
                         origin_);
            add_file(single, nullptr);
        }
    }

private:
    void add_file(const std::filesystem::path& path, const std::vector<std::string>* expected) {
        files_.push_back(std::make_unique<MappedFile>(path));
        const MappedFile& f = *files_.back();
        const std::string p = f.path();
        TPS_CHECK_AS(InputError, f.size() >= 8, "{}: too short for a safetensors file", p);
        uint64_t header_len = 0;
        std::memcpy(&header_len, f.data(), 8);
        TPS_CHECK_AS(InputError, header_len <= kMaxHeader && header_len <= f.size() - 8,
                     "{}: header length {} is corrupt (file has {} bytes)", p, header_len, f.size());
        nlohmann::json header;
        try {
            header = nlohmann::json::parse(reinterpret_cast<const char*>(f.data()) + 8,
                                           reinterpret_cast<const char*>(f.data()) + 8 + header_len);
        } catch (const nlohmann::json::exception& e) {
            throw InputError(fmt::format("{}: header is not valid JSON: {}", p, e.what()));
        }
        TPS_CHECK_AS(InputError, header.is_object(), "{}: header is not a JSON object", p);
        const uint64_t data_start = 8 + header_len;
        const uint64_t data_size = f.size() - data_start;
        std::vector<std::pair<uint64_t, uint64_t>> spans;
        for (const auto& [name, info] : header.items()) {
            if (name == "__metadata__") continue;
            const std::string what = fmt::format("{}: tensor {}", p, name);
            TPS_CHECK_AS(InputError, info.is_object() && info.contains("dtype") && info["dtype"].is_string() &&
                                         info.contains("shape") && info["shape"].is_array() &&
                                         info.contains("data_offsets") && info["data_offsets"].is_array() &&
                                         info["data_offsets"].size() == 2,
                         "{}: needs dtype, shape and data_offsets [begin, end]", what);
            const auto dt = safetensors_dtype(info["dtype"].get<std::string>());
            TPS_CHECK_AS(InputError, dt.has_value(), "{}: dtype {} is not supported", what, info["dtype"].dump());
            TensorEntry e;
            e.type = *dt;
            e.file = &f;
            int64_t elements = 1;
            for (const auto& d : info["shape"]) {
                TPS_CHECK_AS(InputError, d.is_number_unsigned() && d.get<uint64_t>() <= (uint64_t{1} << 40),
                             "{}: shape {} is not a list of sizes", what, info["shape"].dump());
                e.shape.push_back(d.get<int64_t>());
                TPS_CHECK_AS(InputError, !__builtin_mul_overflow(elements, e.shape.back(), &elements),
                             "{}: shape {} is too large", what, info["shape"].dump());
            }
            const auto& off = info["data_offsets"];
            TPS_CHECK_AS(InputError, off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                         "{}: data_offsets must be non-negative integers", what);
            const uint64_t begin = off[0].get<uint64_t>();
            const uint64_t end = off[1].get<uint64_t>();
            TPS_CHECK_AS(InputError, begin <= end && end <= data_size,
                         "{}: data [{}, {}) lies outside the file's {} data bytes: truncated?", what, begin, end,
                         data_size);
            // element bytes only (an FP8 checkpoint keeps its scales in tensors of their own)
            const auto want = e.type == DType::fp8 ? std::optional<int64_t>(elements)
                                                   : matrix_bytes(e.type, 1, std::max<int64_t>(elements, 0));
            TPS_CHECK_AS(InputError, want && static_cast<uint64_t>(*want) == end - begin,
                         "{}: {} bytes stored for a {} tensor of shape {} (needs {})", what, end - begin,
                         dtype_name(e.type), info["shape"].dump(), want.value_or(-1));
            e.offset = data_start + begin;
            e.bytes = static_cast<int64_t>(end - begin);
            spans.emplace_back(begin, end);
            TPS_CHECK_AS(InputError, tensors_.emplace(name, e).second, "{}: tensor {} is in two files", p, name);
        }
        std::sort(spans.begin(), spans.end());
        for (size_t i = 1; i < spans.size(); ++i) {
            TPS_CHECK_AS(InputError, spans[i].first >= spans[i - 1].second, "{}: two tensors overlap at byte {}", p,
                         spans[i].first);
        }
        if (expected) {
            for (const auto& name : *expected) {
                TPS_CHECK_AS(InputError, tensors_.contains(name), "{}: the index lists {} in this file, which lacks it",
                             p, name);
            }
        }
    }
};

}  // namespace

std::unique_ptr<WeightSource> open_safetensors(const std::filesystem::path& dir) {
    return std::make_unique<SafetensorsSource>(dir);
}

}  // namespace tps::detail
