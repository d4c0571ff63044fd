// The part of a weight source both formats share: a table of tensors (type, torch-order shape,
// where the bytes are in which mapped file) and the slicing logic over it.
#pragma once

#include "tpserve/engine/weights.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tps::detail {

struct TensorEntry {
    DType type = DType::f32;
    std::vector<int64_t> shape;  // torch order: [out, in] or [n]
    const MappedFile* file = nullptr;
    uint64_t offset = 0;  // absolute in the file
    int64_t bytes = 0;
};

class TableSource : public WeightSource {
public:
    bool has(std::string_view name) const override;
    std::vector<int64_t> shape(std::string_view name) const override;
    DType type(std::string_view name) const override;
    Weight matrix(std::string_view name, Range rows, Range cols) const override;
    Vec vector(std::string_view name, Range r) const override;

protected:
    // The stored name for an HF name (GGUF translates; safetensors is the identity).
    virtual std::string stored_name(std::string_view hf_name) const { return std::string(hf_name); }
    const TensorEntry& entry(std::string_view hf_name) const;

    std::vector<std::unique_ptr<MappedFile>> files_;
    std::map<std::string, TensorEntry, std::less<>> tensors_;  // by stored name
    std::string origin_;
};

}  // namespace tps::detail

namespace tps::detail {
std::unique_ptr<WeightSource> open_safetensors(const std::filesystem::path& dir);
std::unique_ptr<WeightSource> open_gguf_weights(const std::filesystem::path& path);
}  // namespace tps::detail
