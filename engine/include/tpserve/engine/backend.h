// The one seam between model code and hardware (docs/design.md, "Backends"). Model code calls
// these ops on Tensors in the backend's memory and never branches on which backend it has.
// CpuBackend is the reference; CudaBackend plugs in behind the same interface.
#pragma once

#include "tpserve/engine/memory.h"
#include "tpserve/engine/row_sampling.h"
#include "tpserve/engine/weights.h"
#include "tpserve/partition/dtype.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

// Memory a backend owns (host memory for the CPU backend, device memory for CUDA).
class DeviceMemory {
public:
    virtual ~DeviceMemory() = default;
    virtual void* data() noexcept = 0;
    virtual int64_t bytes() const noexcept = 0;
};

// Activations: rows x cols, row-major and contiguous, in backend memory.
struct Tensor {
    void* data = nullptr;
    DType type = DType::f32;
    int64_t rows = 0;
    int64_t cols = 0;

    float* f32() const noexcept { return static_cast<float*>(data); }
    // rows [first, first + n) of this tensor
    Tensor slice_rows(int64_t first, int64_t n) const noexcept;
    // the same memory seen as rows x cols (rows * cols must not grow)
    Tensor reshape(int64_t rows, int64_t cols) const noexcept;
};

// Rotary embedding: the inverse frequencies (scaling applied) and how pairs are formed.
struct RopeTable {
    std::vector<float> inv_freq;  // rotary_dims / 2 entries
    int64_t rotary_dims = 0;
    bool adjacent_pairs = false;  // (2i, 2i+1) as llama.cpp's permuted Q/K; else (i, i + dims/2)
};

// The paged KV cache's memory: per layer K and V, each [blocks][block_tokens][kv_heads][head_dim].
struct KvLayout {
    int64_t layers = 0;
    int64_t kv_heads = 0;  // on this rank
    int64_t head_dim = 0;
    int64_t block_tokens = 16;
    int64_t blocks = 0;
    DType dtype = DType::f32;
    int64_t token_stride() const noexcept { return kv_heads * head_dim; }  // elements per token slot
};

// Where each token of a step sits: its position, and its sequence's block table.
struct StepLayout {
    struct Sequence {
        const int32_t* blocks = nullptr;  // block ids, in order
        int64_t n_blocks = 0;
    };
    std::vector<int32_t> positions;  // per token
    std::vector<int32_t> sequence;   // per token: index into sequences
    std::vector<Sequence> sequences;
};

// The most likely token of one row of a vocabulary slice, and what its log-softmax needs: the
// row's maximum and the sum over the slice of exp(logit - max). Ties go to the lowest id.
struct GreedyPick {
    float max = 0;
    int32_t token = 0;  // vocabulary id (the slice's first id added)
    float sum_exp = 0;
};

// The most any step of a model asks of a backend, known once the model is built
// (Backend::reserve): the tokens of its largest step, this rank's attention heads, the matrices
// its products read (the layers' projections and the LM head), and where the backend samples
// (sample_rows), the most rows one call draws and the most penalty entries their list holds (the
// vocabulary: the model cuts a round whose rows list more into smaller calls).
struct StepLimits {
    int64_t max_tokens = 0;
    int64_t heads = 0, kv_heads = 0, head_dim = 0;
    std::vector<const Weight*> matrices;
    int64_t sample_rows = 0, sample_penalties = 0;  // 0: the backend samples no rows
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string_view name() const noexcept = 0;
    // Where tensors live: false for host memory (the CPU), true for a device's. A device backend
    // names the stream its ops run on (a cudaStream_t), so a communicator can join it.
    virtual bool device_memory() const noexcept { return false; }
    virtual void* native_stream() const noexcept { return nullptr; }
    // How a device backend waits for its stream before the host reads a result (to_host,
    // greedy_rows, sample_rows) and in synchronize(): `wait` when communicators queue collectives
    // on that stream and return (NcclQueue::wait, which bounds the wait by their deadline and
    // names a stalled peer); without one, a plain wait. The CPU has nothing to wait for.
    virtual void set_stream_wait(std::function<void()> wait) { (void)wait; }
    // Waits until the work issued so far is done (a step's end, on a stage whose step ends with no
    // output, and before a failed step is left).
    virtual void synchronize() {}
    // Whether the backend's matmuls read weights stored as `t` (the CPU: every engine_supports
    // format), and the formats it does read, for messages.
    virtual bool computes_with(DType t) const noexcept;
    virtual std::string weight_formats() const;
    // Whether it computes mixture-of-experts layers (zero and add_rows_scaled below): a model
    // with them is refused before its weights load where not (check_backend_computes).
    virtual bool computes_experts() const noexcept { return false; }

    virtual std::unique_ptr<DeviceMemory> allocate(int64_t bytes, MemoryTag tag) = 0;

    // Moves a weight matrix or vector into the backend's memory (counted under MemoryTag::weights)
    // before any op reads it. The CPU computes on host memory and leaves both where they are.
    virtual void place(Weight& w) { (void)w; }
    virtual void place(Vec& v) { (void)v; }
    // Takes, before the first step, the working memory steps within `limits` will use (counted
    // under MemoryTag::workspace), so serving allocates nothing more: the amounts the planner
    // counts (docs/planner.md). The CPU needs none.
    virtual void reserve(const StepLimits& limits) { (void)limits; }
    // A step starts. `key` is non-zero when the step repeats in shape (decode: the same number of
    // one-token sequences, one kind of output, in one round) and names that shape: a backend may
    // record such a step's work once and replay it (CUDA graphs). Its output op (to_host or
    // greedy_rows, once) ends it.
    virtual void start_step(uint64_t key) { (void)key; }
    // The step the following ops belong to, once before its layers: a backend with memory of its
    // own copies the positions and block tables there once per step instead of once per op.
    virtual void begin_step(const StepLayout& step) { (void)step; }

    // out[i] = row ids[i] - vocab_first of `table` (rows outside the table give zeros: the
    // vocabulary-parallel embedding sums partial rows across ranks)
    virtual void embedding(const Weight& table, int64_t vocab_first, std::span<const int32_t> ids, Tensor out) = 0;
    // out = x / rms(x) * w, per row
    virtual void rmsnorm(const Tensor& x, const Vec& w, float eps, Tensor out) = 0;
    // y = x W^T: x (tokens, w.cols) -> y (tokens, w.rows). `next`: the weight the following matmul
    // reads, a hint a backend may use to start fetching it early (null: none)
    virtual void matmul(const Weight& w, const Tensor& x, Tensor y, const Weight* next = nullptr) = 0;
    // several products of the same x (Q, K, V; gate, up) as one pass: one dispatch on the CPU
    struct Product {
        const Weight* w;
        Tensor y;
    };
    virtual void matmul_multi(const Tensor& x, std::span<const Product> products, const Weight* next = nullptr) = 0;
    // y[r] += b, per row
    virtual void add_bias(Tensor y, const Vec& b) = 0;
    // rotates every head of x (tokens, heads * head_dim) by its token's position
    virtual void rope(Tensor x, int64_t head_dim, const RopeTable& table, std::span<const int32_t> positions) = 0;
    // writes k, v (tokens, kv_heads * head_dim) of `layer` into the cache at the tokens' slots
    virtual void kv_store(DeviceMemory& kv, const KvLayout& layout, int64_t layer, const Tensor& k,
                          const Tensor& v, const StepLayout& step) = 0;
    // causal attention of q (tokens, heads * head_dim) over each token's sequence up to its
    // position, grouped-query (heads / kv_heads query heads share a KV head) -> out, same shape
    virtual void attention(const Tensor& q, const DeviceMemory& kv, const KvLayout& layout, int64_t layer,
                           const StepLayout& step, int64_t heads, Tensor out) = 0;
    // out = silu(gate) * up
    virtual void swiglu(const Tensor& gate, const Tensor& up, Tensor out) = 0;
    // x += y
    virtual void add(Tensor x, const Tensor& y) = 0;
    // x += y, then out = x / rms(x) * w: a residual add and the norm after it, which a backend
    // may do in one pass (the CUDA backend: one kernel instead of two). The default is the two ops.
    virtual void add_rmsnorm(Tensor x, const Tensor& y, const Vec& w, float eps, Tensor out) {
        add(x, y);
        rmsnorm(x, w, eps, out);
    }
    // out[i] = x[rows[i]] (rows of the same width)
    virtual void gather_rows(const Tensor& x, std::span<const int64_t> rows, Tensor out) = 0;
    // Mixture-of-experts layers (llama.h): x = 0, and out[rows[i]] += scales[i] * y[i] (rows
    // distinct). A backend without them says so (computes_experts), and such a model is refused
    // when it is built (LlamaModel's constructor); these defaults refuse them too.
    virtual void zero(Tensor x);
    virtual void add_rows_scaled(const Tensor& y, std::span<const int64_t> rows, std::span<const float> scales, Tensor out);
    // copies rows of x to host memory
    virtual void to_host(const Tensor& x, float* host) = 0;
    // per row of logits (a slice of the vocabulary starting at vocab_first): its GreedyPick, to
    // host memory; greedy decoding then moves 12 bytes per row, not the row
    virtual void greedy_rows(const Tensor& logits, int64_t vocab_first, GreedyPick* host) = 0;
    // Samples each row of logits (the whole vocabulary) as row_sampling.h defines it, rows[i]
    // for row i (its penalties a range of `penalties`, each token at most once in a row: a device
    // rewrites them in parallel), results to host memory: a few bytes per
    // row instead of the row. Like greedy_rows, it ends the step. The logits may be overwritten.
    virtual void sample_rows(const Tensor& logits, std::span<const RowSampling> rows,
                             std::span<const PenaltyEntry> penalties, SampledRow* host) = 0;
};

// The CPU backend with `threads` threads (0: all hardware threads).
// threads <= 0: one per CPU this process may run on (its affinity mask: what taskset or mpirun's
// binding leaves it).
std::unique_ptr<Backend> make_cpu_backend(int threads);
int usable_cpus() noexcept;

// The CUDA backend on `device` (engine/src/cuda, tps_cuda_backend). tps::UsageError in a build
// without CUDA, tps::DeviceError where the device cannot be used; cuda_backend_unavailable()
// says which beforehand ("" when it can be made).
std::unique_ptr<Backend> make_cuda_backend(int device);
std::string cuda_backend_unavailable(int device);

}  // namespace tps
