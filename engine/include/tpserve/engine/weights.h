// Weight tensors as the engine holds them, and the sources they are read from. A source (a
// safetensors checkpoint, sharded or not, or a GGUF file) is memory-mapped; reading a range of
// rows is zero-copy, a range of columns is gathered into an owned buffer (tagged as weights).
// Every read counts the checkpoint bytes it took, so a rank's total can be held against the
// planner's prediction exactly.
#pragma once

#include "tpserve/engine/memory.h"
#include "tpserve/partition/dtype.h"
#include "tpserve/partition/model.h"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

struct ModelDesc;
class DeviceMemory;

// A matrix (rows x cols) in any supported storage format, row-major, `row_bytes` per row.
struct Weight {
    DType type = DType::f32;
    int64_t rows = 0;
    int64_t cols = 0;
    int64_t row_bytes = 0;
    const std::byte* data = nullptr;
    Buffer owned;  // set when the data was gathered or converted, empty when mapped in place
    // set when a backend moved the matrix into its own memory (Backend::place): `data` then points
    // there and may not be read from the host
    std::shared_ptr<DeviceMemory> device;

    const std::byte* row(int64_t r) const noexcept { return data + r * row_bytes; }
    bool empty() const noexcept { return data == nullptr; }
    // A view of the same data (for tied embeddings): shares, never owns (a placed copy is shared).
    Weight alias() const;
};

// A vector (norm weight, bias, rope factors) converted to f32.
struct Vec {
    Buffer buf;
    int64_t n = 0;
    std::shared_ptr<DeviceMemory> device;  // a backend's copy (Backend::place); the host copy stays
    const float* data() const noexcept { return buf.as<const float>(); }
    bool empty() const noexcept { return n == 0; }
};

struct Range {
    int64_t first = 0;
    int64_t last = -1;  // exclusive; -1: to the end
};

// The formats the CPU kernels compute with.
bool engine_supports(DType t) noexcept;

class WeightSource {
public:
    virtual ~WeightSource() = default;
    // An HF model directory (model.safetensors or model.safetensors.index.json + shards), or a
    // .gguf file. Tensors are named with HF names either way (GGUF names are translated).
    // Shared: weights read from it point into its mapped files, and hold it alive.
    static std::shared_ptr<const WeightSource> open(const std::filesystem::path& path);
    // Seeded random weights of the model's tensors in `type` (vectors in f32): each element
    // depends only on the seed, the tensor and its position, so every rank's shard agrees.
    static std::shared_ptr<const WeightSource> random(const ModelDesc& model, DType type, uint64_t seed);

    virtual bool has(std::string_view hf_name) const = 0;
    // Shape in torch order: [out, in] for matrices, [n] for vectors.
    virtual std::vector<int64_t> shape(std::string_view hf_name) const = 0;
    virtual DType type(std::string_view hf_name) const = 0;

    // rows [rows.first, rows.last) x cols [cols.first, cols.last) of a matrix. A column range
    // must start and end on the format's block boundaries. Errors name the tensor.
    virtual Weight matrix(std::string_view hf_name, Range rows = {}, Range cols = {}) const = 0;
    // elements [r.first, r.last) of a vector, as f32.
    virtual Vec vector(std::string_view hf_name, Range r = {}) const = 0;

    // Checkpoint bytes read so far (matrices and vectors as stored in the file).
    int64_t bytes_read() const noexcept { return bytes_read_; }

protected:
    mutable int64_t bytes_read_ = 0;
};

// A read-only memory map of a whole file.
class MappedFile {
public:
    explicit MappedFile(const std::filesystem::path& path);
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();
    const std::byte* data() const noexcept { return data_; }
    uint64_t size() const noexcept { return size_; }
    const std::string& path() const noexcept { return path_; }

private:
    std::string path_;
    const std::byte* data_ = nullptr;
    uint64_t size_ = 0;
};

// Dequantizes (or converts) elements [first, first + n) of a row to f32. `first` and `n` must be
// multiples of the format's block.
void row_to_f32(DType type, const std::byte* row, int64_t first, int64_t n, float* out);

// Stores n floats (a multiple of the block) as one row of `type`, quantizing as ggml's reference
// quantizers do (q8_0: d = max|x| / 127; q4_0: d = x_absmax_signed / -8; q4_1: d = (max - min) /
// 15, m = min). For weights made on the spot (benchmarks, GPU checks).
void f32_to_row(DType type, const float* x, int64_t n, std::byte* row);

}  // namespace tps
