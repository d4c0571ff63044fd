// GGUF (v2, v3) metadata: the header, every key/value pair and the tensor-info table, read without
// touching tensor data. Counts and lengths are checked against the file's size before anything is
// allocated, so a corrupt or truncated file is a tps::InputError naming what broke, not a crash.
#pragma once

#include "tpserve/partition/model.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tps {

enum class GgufType : uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
    string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

struct GgufValue {
    GgufType type = GgufType::u8;
    GgufType array_type = GgufType::u8;  // element type when type == array
    int64_t integer = 0;                 // every integer and bool scalar
    double real = 0;                     // f32, f64
    std::string str;
    // arrays: exactly one of these holds the elements, by element type
    std::vector<int64_t> ints;  // integer and bool elements
    std::vector<double> reals;
    std::vector<std::string> strs;
    uint64_t array_size = 0;

    bool is_integer() const noexcept;
    bool is_real() const noexcept { return type == GgufType::f32 || type == GgufType::f64; }
};

struct GgufTensorInfo {
    std::string name;
    std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (input) dimension
    uint32_t ggml_type = 0;
    uint64_t offset = 0;  // from the start of the data section
    int64_t bytes = 0;    // exact size from ne and the type's blocks
};

struct GgufFile {
    std::string path;
    uint32_t version = 0;
    uint64_t alignment = 32;
    uint64_t data_offset = 0;  // file offset of the data section
    uint64_t file_size = 0;
    std::map<std::string, GgufValue> kv;
    std::vector<GgufTensorInfo> tensors;

    const GgufValue* find(const std::string& key) const;
    std::optional<int64_t> integer(const std::string& key) const;
    std::optional<double> real(const std::string& key) const;
    std::optional<std::string> string(const std::string& key) const;
};

GgufFile read_gguf_metadata(const std::filesystem::path& path);

// A Llama-family ModelDesc from GGUF metadata (general.architecture llama or qwen2). Tensor types
// come from the file; names and shapes are checked against the hyper-parameters.
ModelDesc model_from_gguf(const GgufFile& file);

// True when the file starts with the GGUF magic.
bool looks_like_gguf(const std::filesystem::path& path);

}  // namespace tps
