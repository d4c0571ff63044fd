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
// Weight-only int8 (the planner's int8: one f16 scale per output row) keeps its rows pure, one
// int8 per element (row_bytes = cols, so rows stay 16-byte aligned for vector loads), and the
// `rows` f16 scales follow the last row in the same block: element (r, c) is q[r][c] * scale[r].
// Every other format has no trailer.
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
    // The whole block: the rows, then int8's scales. What a copy of the matrix must move.
    int64_t bytes() const noexcept;
    // int8: the f16 scales, one per row, after the last row.
    const std::byte* scales() const noexcept { return data + rows * row_bytes; }
    // Row r's scale (host data only): int8's, 1 for every other format.
    float scale(int64_t r) const noexcept;
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

// The formats the CPU kernels compute with, and their names for messages.
bool engine_supports(DType t) noexcept;
std::string_view engine_format_names() noexcept;
// Those it can also quantize to (--format, random weights): all but the i-quants (iq4_nl, iq4_xs),
// which it reads from GGUF files only.
bool engine_stores(DType t) noexcept;
std::string_view engine_store_names() noexcept;

// Bytes of one stored row of `cols` elements (int8: the values alone, its scales trail the
// matrix); nullopt when the row does not split into the format's blocks.
std::optional<int64_t> weight_row_bytes(DType type, int64_t cols) noexcept;

// An owned, zeroed rows x cols matrix in `type`, its memory tagged `tag`. UsageError when the
// engine does not compute with `type` or a row does not split into its blocks.
Weight make_weight(DType type, int64_t rows, int64_t cols, MemoryTag tag);

// Stores x (w.cols floats) as row r of an owned matrix, quantizing as f32_to_row does; int8 takes
// the scale of x's largest magnitude (int8_scale_bits).
void store_row(Weight& w, int64_t r, const float* x);

// int8: the f16 scale (its bits) for a row whose largest magnitude is `amax`: the smallest f16 at
// or above amax / 127, so no value rounds past +-127. InputError when amax is not finite or
// needs a scale beyond f16's range.
uint16_t int8_scale_bits(float amax);
// int8: the scale for the n values of a whole row (int8_scale_bits of their largest magnitude;
// InputError for a value that is not finite). Slices of the row are stored with it.
uint16_t int8_row_scale_bits(const float* x, int64_t n);
// int8: stores x (w.cols floats) as row r with the given scale: for a column slice of a matrix
// whose scale was taken over the whole row (tensor-parallel ranks agree on every row's scale).
void store_int8_row(Weight& w, int64_t r, const float* x, uint16_t scale_bits);

// Elements [first, first + n) of row r as f32, the row's scale applied (any format; host data).
void weight_row_to_f32(const Weight& w, int64_t r, int64_t first, int64_t n, float* out);

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
    // `inner` with the linear layer weights converted to the formats `model` gives them (a model
    // description after apply_weight_format): quantizing at load. Rows are converted whole, so
    // int8's scale is the whole row's on every rank that loads a column slice of it. UsageError
    // when a format is one the engine does not compute with.
    static std::shared_ptr<const WeightSource> converted(std::shared_ptr<const WeightSource> inner,
                                                         const ModelDesc& model);

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
// multiples of the format's block. int8 gives the stored integers: its scale is the matrix's, not
// the row's (weight_row_to_f32 applies it).
void row_to_f32(DType type, const std::byte* row, int64_t first, int64_t n, float* out);

// Stores n floats (a multiple of the block) as one row of `type`: the GGML block formats as
// ggml_blocks.h's encode_block (q8_0, q4_0, q4_1, q5_0, q5_1 as ggml's reference quantizers; the
// K-quants with one pass of min/max scales). For weights made on the spot (benchmarks, GPU
// checks) and --format at load. Not int8, whose scale lives outside the row (store_row).
void f32_to_row(DType type, const float* x, int64_t n, std::byte* row);

}  // namespace tps
