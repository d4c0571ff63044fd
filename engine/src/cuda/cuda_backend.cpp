// CudaBackend: the Backend on one NVIDIA GPU. Activations stay f32 on the device as on the CPU, so
// model code is the same; weights are copied to the device once (place) in their stored format.
// Every op is a launch on the backend's one stream; only the step's output (to_host, greedy_rows, sample_rows)
// waits: through the stream wait a model's communicators give (set_stream_wait) where they queue
// collectives on the stream. Nothing else waits behind a collective, whose wait would have no
// deadline: inputs go up from pinned host memory, and a buffer that grows mid-step frees its old
// memory after the next wait. A step's positions and block tables go to the device once per step (begin_step), not
// once per op. Steps the model marks as repeating (start_step) are recorded as CUDA graphs and
// replayed (step_graphs.h); TPS_CUDA_GRAPHS=0 turns that off.
#include "attention.cuh"
#include "cublas_check.h"
#include "cuda_check.h"
#include "device_memory.h"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "gemm.cuh"
#include "gemv.cuh"
#include "greedy.cuh"
#include "kernel_format.h"
#include "sample.cuh"
#include "norm.cuh"
#include "rope.cuh"
#include "step_graphs.h"
#include "step_workspace.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/sampler.h"
#include "tpserve/partition/memory_model.h"

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <vector>

namespace tps {
namespace {

using cuda::CudaMemory;
using cuda::Scratch;
using cuda::WFormat;

constexpr std::string_view kFormats =
    "f32, f16, bf16, int8, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_xs";

WFormat format_of(DType t, const char* op) {
    if (const auto f = cuda::kernel_format(t)) return *f;
    throw UsageError(fmt::format("{}: the CUDA backend does not compute with {} weights ({})", op, dtype_name(t), kFormats));
}

cuda::KvFormat kv_format(DType t) {
    switch (t) {
        case DType::f32: return cuda::KvFormat::f32;
        case DType::f16: return cuda::KvFormat::f16;
        case DType::bf16: return cuda::KvFormat::bf16;
        default: break;
    }
    throw UsageError(fmt::format("KV cache: the CUDA backend stores f32, f16 or bf16, not {}", dtype_name(t)));
}

void check_f32(const Tensor& t, const char* op) {
    TPS_CHECK(t.type == DType::f32, "{}: the CUDA backend computes activations in f32, got {}", op, dtype_name(t.type));
}

// A placed weight as the kernels read it.
cuda::WeightRows device_rows(const Weight& w, const char* op) {
    TPS_CHECK(w.device != nullptr, "{}: a {} x {} weight was not placed on the device (Backend::place)", op, w.rows,
              w.cols);
    cuda::WeightRows rows{reinterpret_cast<const uint8_t*>(w.data), format_of(w.type, op), w.rows, w.cols, w.row_bytes};
    if (w.type == DType::int8) rows.scales = reinterpret_cast<const uint8_t*>(w.scales());
    return rows;
}

const float* vec_data(const Vec& v, const char* op) {
    TPS_CHECK(v.device != nullptr, "{}: a vector of {} was not placed on the device (Backend::place)", op, v.n);
    return static_cast<const float*>(v.device->data());
}

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        TPS_CHECK_CUDA(cudaSetDevice(device_));
        auto ctx = error_context();
        ctx.device = device_;
        set_error_context(ctx);
        cudaDeviceProp prop{};
        TPS_CHECK_CUDA(cudaGetDeviceProperties(&prop, device_));
        multiprocessors_ = prop.multiProcessorCount;
        name_ = std::string("cuda:") + std::to_string(device_) + " (" + prop.name + ")";
        // a blocking stream: ordered with the legacy default stream both ways, so plain cudaMemcpy
        // and cudaMemset by callers (tests, communicators) are never overtaken by our kernels
        TPS_CHECK_CUDA(cudaStreamCreate(&stream_));
        // inputs of recorded and replayed steps are uploaded on their own stream, outside the graph
        TPS_CHECK_CUDA(cudaStreamCreateWithFlags(&upload_stream_, cudaStreamNonBlocking));
        TPS_CHECK_CUBLAS(cublasCreate(&cublas_));
        TPS_CHECK_CUBLAS(cublasSetStream(cublas_, stream_));
        // a workspace of our own (cublasSetStream would reset it, so after): cuBLAS then
        // allocates nothing while a graph records. Its size is the one the planner counts
        // (NVIDIA's advice: 32 MiB from Hopper on, 4 MiB before).
        const int64_t ws = prop.major >= 9 ? kCublasWorkspaceLarge : kCublasWorkspaceSmall;
        cublas_ws_ = std::make_unique<CudaMemory>(ws, MemoryTag::runtime);
        TPS_CHECK_CUBLAS(cublasSetWorkspace(cublas_, cublas_ws_->data(), static_cast<size_t>(ws)));
        const char* graphs = std::getenv("TPS_CUDA_GRAPHS");
        graphs_ = std::make_unique<cuda::StepGraphs>(stream_, pool_, !(graphs && std::string_view(graphs) == "0"));
    }
    ~CudaBackend() override {
        cudaStreamSynchronize(stream_);
        if (pinned_) cudaFreeHost(pinned_);
        graphs_.reset();
        cublasDestroy(cublas_);
        cudaStreamDestroy(upload_stream_);
        cudaStreamDestroy(stream_);
    }

    std::string_view name() const noexcept override { return name_; }
    bool computes_with(DType t) const noexcept override { return cuda::kernel_format(t).has_value(); }
    bool computes_experts() const noexcept override { return true; }
    std::string weight_formats() const override { return std::string(kFormats); }
    bool device_memory() const noexcept override { return true; }
    void* native_stream() const noexcept override { return stream_; }
    void set_stream_wait(std::function<void()> wait) override {
        stream_wait_ = std::move(wait);
        // a buffer that grows mid-step keeps its old memory until the next wait: cudaFree would
        // wait for the stream, and so for a collective a stalled peer never completes
        pool_.defer_frees = eager_pool_.defer_frees = static_cast<bool>(stream_wait_);
    }

    void synchronize() override {
        graphs_->finish();  // a recorded or replayed step runs now
        begun_ = nullptr;
        wait_stream();
    }

    std::unique_ptr<DeviceMemory> allocate(int64_t bytes, MemoryTag tag) override {
        graphs_->abandon();
        ++pool_.generation;  // graphs point at activations, caches and weights: a new model's are elsewhere
        TPS_CHECK_CUDA(cudaSetDevice(device_));
        auto mem = std::make_unique<CudaMemory>(bytes, tag);
        // zero-initialised like host buffers, so nothing reads garbage before it is written
        if (bytes > 0) TPS_CHECK_CUDA(cudaMemsetAsync(mem->data(), 0, static_cast<size_t>(bytes), stream_));
        return mem;
    }

    void place(Weight& w) override {
        TPS_CHECK_CUDA(cudaSetDevice(device_));  // the calling thread's current device may be another
        graphs_->abandon();
        ++pool_.generation;
        if (w.empty() || w.device) return;
        (void)format_of(w.type, "place");  // refuse a format the kernels cannot read before copying it
        const int64_t bytes = w.bytes();  // int8's scales follow its rows
        auto mem = std::make_shared<CudaMemory>(bytes, MemoryTag::weights);
        TPS_CHECK_CUDA(cudaMemcpyAsync(mem->data(), w.data, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, stream_));
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        w.data = static_cast<const std::byte*>(mem->data());
        w.device = std::move(mem);
        w.owned = Buffer();  // the host copy, if the weight had one, is no longer needed
    }

    void place(Vec& v) override {
        TPS_CHECK_CUDA(cudaSetDevice(device_));
        graphs_->abandon();
        ++pool_.generation;
        if (v.empty() || v.device) return;
        auto mem = std::make_shared<CudaMemory>(v.n * 4, MemoryTag::weights);
        TPS_CHECK_CUDA(cudaMemcpyAsync(mem->data(), v.data(), static_cast<size_t>(v.n) * 4, cudaMemcpyHostToDevice, stream_));
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        v.device = std::move(mem);
    }

    void reserve(const StepLimits& limits) override {
        TPS_CHECK_CUDA(cudaSetDevice(device_));
        const cuda::StepWorkspace ws = cuda::step_workspace(limits, multiprocessors_);
        if (ws.gemm > 0) gemm_.reserve(ws.gemm);
        if (ws.partial > 0) partial_.reserve(ws.partial);
        if (ws.sampling > 0) sampling_.reserve(ws.sampling);
    }

    void start_step(uint64_t key) override {
        // a step may be driven from a thread other than the one that made the backend (the
        // scheduler's): its allocations and launches must go to this backend's device
        TPS_CHECK_CUDA(cudaSetDevice(device_));
        begun_ = nullptr;
        graphs_->start(key);
    }

    void begin_step(const StepLayout& step) override {
        upload_step(step);
        begun_ = &step;
        graphs_->recheck();  // a replay whose buffers just moved records again
    }

    void embedding(const Weight& table, int64_t vocab_first, std::span<const int32_t> ids, Tensor out) override {
        check_f32(out, "embedding");
        TPS_CHECK(out.rows == static_cast<int64_t>(ids.size()) && out.cols == table.cols, "embedding: shape mismatch");
        cuda::EmbeddingParams p;
        p.table = device_rows(table, "embedding");
        p.vocab_first = vocab_first;
        p.ids = upload_ints(buffers().ids, ids);
        p.n = out.rows;
        p.out = out.f32();
        TPS_CHECK(cuda::embedding_supported(p), "embedding: {} rows of {} are not supported", p.n, p.table.cols);
        if (graphs_->launching()) cuda::invoke_embedding(p, stream_);
    }

    void rmsnorm(const Tensor& x, const Vec& w, float eps, Tensor out) override {
        check_f32(x, "rmsnorm");
        TPS_CHECK(w.n == x.cols && out.cols == x.cols && out.rows == x.rows, "rmsnorm: shape mismatch");
        cuda::RmsNormParams p{x.f32(), vec_data(w, "rmsnorm"), out.f32(), x.rows, x.cols, eps};
        TPS_CHECK(cuda::rmsnorm_supported(p), "rmsnorm: {} x {} is not supported", x.rows, x.cols);
        if (graphs_->launching()) cuda::invoke_rmsnorm(p, stream_);
    }

    void add_rmsnorm(Tensor x, const Tensor& y, const Vec& w, float eps, Tensor out) override {
        check_f32(x, "add_rmsnorm");
        check_f32(y, "add_rmsnorm");
        TPS_CHECK(x.rows == y.rows && x.cols == y.cols && w.n == x.cols && out.cols == x.cols && out.rows == x.rows,
                  "add_rmsnorm: shape mismatch");
        cuda::RmsNormParams p{x.f32(), vec_data(w, "add_rmsnorm"), out.f32(), x.rows, x.cols, eps};
        TPS_CHECK(cuda::rmsnorm_supported(p), "add_rmsnorm: {} x {} is not supported", x.rows, x.cols);
        if (graphs_->launching()) cuda::invoke_add_rmsnorm(p, x.f32(), y.f32(), stream_);
    }

    void matmul(const Weight& w, const Tensor& x, Tensor y, const Weight* next) override {
        const Product one[] = {{&w, y}};
        matmul_multi(x, one, next);
    }

    void matmul_multi(const Tensor& x, std::span<const Product> products, const Weight* /*next*/) override {
        check_f32(x, "matmul");
        for (const auto& pr : products) {
            const Weight& w = *pr.w;
            TPS_CHECK(x.cols == w.cols && pr.y.cols == w.rows && pr.y.rows == x.rows,
                      "matmul: x ({} x {}) W ({} x {}) y ({} x {})", x.rows, x.cols, w.rows, w.cols, pr.y.rows,
                      pr.y.cols);
        }
        if (x.rows == 0) return;
        if (x.rows <= cuda::kGemvMaxTokens) {
            // consecutive products of one format share a launch (q, k and v; gate and up), every
            // one checked before any launches
            std::vector<cuda::GemvParams>& launches = gemv_launches_;
            launches.clear();
            for (const auto& pr : products) {
                const Weight& w = *pr.w;
                cuda::GemvParams one;
                one.part[0] = {device_rows(w, "matmul"), pr.y.f32(), pr.y.cols};
                one.x = x.f32();
                one.x_stride = x.cols;
                one.tokens = x.rows;
                TPS_CHECK(cuda::gemv_supported(one), "matmul: a {} x {} {} weight is not supported", w.rows, w.cols,
                          dtype_name(w.type));
                if (!launches.empty()) {
                    cuda::GemvParams joined = launches.back();
                    if (joined.parts < cuda::kGemvMaxParts) {
                        joined.part[joined.parts++] = one.part[0];
                        if (cuda::gemv_supported(joined)) {
                            launches.back() = joined;
                            continue;
                        }
                    }
                }
                launches.push_back(one);
            }
            if (graphs_->launching()) {
                for (const auto& p : launches) cuda::invoke_gemv(p, stream_);
            }
            return;
        }
        // the products share one workspace, the largest any of them needs, so that x is rounded to
        // 16 bits once per type (q, k and v; gate and up) instead of once per product
        int64_t bytes = 0;
        for (const auto& pr : products) {
            const cuda::GemmParams p = gemm_params(*pr.w, x, pr.y);
            TPS_CHECK(cuda::gemm_supported(p), "matmul: a {} x {} {} weight with {} tokens is not supported",
                      pr.w->rows, pr.w->cols, dtype_name(pr.w->type), x.rows);
            bytes = std::max(bytes, cuda::gemm_workspace_bytes(p));
        }
        void* ws = gemm_.get(bytes);
        std::optional<cuda::GemmInput> converted;  // what the workspace holds x as
        for (const auto& pr : products) {
            cuda::GemmParams p = gemm_params(*pr.w, x, pr.y);
            const cuda::GemmInput input = cuda::gemm_input(p.w.format);
            p.x16_ready = converted == input;
            if (input != cuda::GemmInput::f32) converted = input;
            if (graphs_->launching()) cuda::invoke_gemm(p, cublas_, ws, stream_);
        }
    }

    cuda::GemmParams gemm_params(const Weight& w, const Tensor& x, const Tensor& y) const {
        cuda::GemmParams p;
        p.w = device_rows(w, "matmul");
        p.x = x.f32();
        p.tokens = x.rows;
        p.y = y.f32();
        p.y_stride = y.cols;
        return p;
    }

    void add_bias(Tensor y, const Vec& b) override {
        check_f32(y, "add_bias");
        TPS_CHECK(b.n == y.cols, "add_bias: {} values for {} columns", b.n, y.cols);
        if (graphs_->launching()) cuda::invoke_add_bias(y.f32(), vec_data(b, "add_bias"), y.rows, y.cols, stream_);
    }

    void rope(Tensor x, int64_t head_dim, const RopeTable& table, std::span<const int32_t> positions) override {
        check_f32(x, "rope");
        TPS_CHECK(x.cols % head_dim == 0 && static_cast<int64_t>(positions.size()) == x.rows, "rope: shape mismatch");
        cuda::RopeParams p;
        p.x = x.f32();
        p.rows = x.rows;
        p.cols = x.cols;
        p.head_dim = head_dim;
        p.half = table.rotary_dims / 2;
        p.adjacent = table.adjacent_pairs;
        p.inv_freq = rope_table(table);
        p.positions = step_positions(positions);
        TPS_CHECK(cuda::rope_supported(p), "rope: {} rotary dimensions of heads of {} are not supported",
                  table.rotary_dims, head_dim);
        if (graphs_->launching()) cuda::invoke_rope(p, stream_);
    }

    void kv_store(DeviceMemory& kv, const KvLayout& L, int64_t layer, const Tensor& k, const Tensor& v,
                  const StepLayout& step) override {
        check_f32(k, "kv_store");
        check_f32(v, "kv_store");
        const int64_t stride = L.token_stride();
        TPS_CHECK(k.cols == stride && v.cols == stride && k.rows == v.rows &&
                      k.rows == static_cast<int64_t>(step.positions.size()),
                  "kv_store: shape mismatch");
        const cuda::StepView view = step_view(step);
        cuda::KvStoreParams p;
        p.k = k.f32();
        p.v = v.f32();
        layer_planes(kv, L, layer, p.k_plane, p.v_plane);
        p.format = kv_format(L.dtype);
        p.stride = stride;
        p.block_tokens = L.block_tokens;
        p.step = view;
        TPS_CHECK(cuda::kv_store_supported(p), "kv_store: not supported");
        if (graphs_->launching()) cuda::invoke_kv_store(p, stream_);
    }

    void attention(const Tensor& q, const DeviceMemory& kv, const KvLayout& L, int64_t layer, const StepLayout& step,
                   int64_t heads, Tensor out) override {
        check_f32(q, "attention");
        TPS_CHECK(L.kv_heads > 0 && q.cols == heads * L.head_dim && out.cols == q.cols && out.rows == q.rows && heads % L.kv_heads == 0 &&
                      q.rows == static_cast<int64_t>(step.positions.size()),
                  "attention: shape mismatch");
        const cuda::StepView view = step_view(step);
        cuda::AttentionParams p;
        p.q = q.f32();
        p.out = out.f32();
        void* k_plane = nullptr;
        void* v_plane = nullptr;
        layer_planes(const_cast<DeviceMemory&>(kv), L, layer, k_plane, v_plane);
        p.k_plane = k_plane;
        p.v_plane = v_plane;
        p.format = kv_format(L.dtype);
        p.heads = heads;
        p.kv_heads = L.kv_heads;
        p.head_dim = L.head_dim;
        p.block_tokens = L.block_tokens;
        p.step = view;
        if (prefill_tiles(step, p)) {
            if (graphs_->launching()) cuda::invoke_attention_prefill(p, stream_);
            return;
        }
        // a replayed graph keeps its split: sized for the whole cache, so sequences may grow (and
        // the first, eager step of such a shape splits alike, so it loads the same kernels; with
        // graphs off every such step does, so its logits are a replay's)
        const int64_t max_keys = graphs_->repeating() ? L.blocks * L.block_tokens : step_max_keys_;
        p.splits = cuda::attention_split(q.rows, L.kv_heads, max_keys, multiprocessors_);
        if (p.splits > 1) p.partial = static_cast<float*>(partial_.get(cuda::attention_partial_floats(p) * 4));
        TPS_CHECK(cuda::attention_supported(p),
                  "attention: {} query heads over {} KV heads of {} are not supported on CUDA (at most {} query heads "
                  "per KV head, head size at most {})",
                  heads, L.kv_heads, L.head_dim, cuda::kAttentionMaxGroup, cuda::kAttentionMaxHeadDim);
        if (graphs_->launching()) cuda::invoke_attention(p, stream_);
    }

    void swiglu(const Tensor& gate, const Tensor& up, Tensor out) override {
        check_f32(gate, "swiglu");
        TPS_CHECK(gate.cols == up.cols && gate.rows == up.rows && out.cols == gate.cols && out.rows == gate.rows,
                  "swiglu: shape mismatch");
        if (graphs_->launching()) cuda::invoke_swiglu(gate.f32(), up.f32(), out.f32(), gate.rows * gate.cols, stream_);
    }

    void add(Tensor x, const Tensor& y) override {
        check_f32(x, "add");
        TPS_CHECK(x.rows == y.rows && x.cols == y.cols, "add: shape mismatch");
        if (graphs_->launching()) cuda::invoke_add(x.f32(), y.f32(), x.rows * x.cols, stream_);
    }

    void gather_rows(const Tensor& x, std::span<const int64_t> rows, Tensor out) override {
        check_f32(x, "gather_rows");
        TPS_CHECK(out.cols == x.cols && out.rows == static_cast<int64_t>(rows.size()), "gather_rows: shape mismatch");
        std::vector<int32_t> r(rows.size());
        for (size_t i = 0; i < rows.size(); ++i) {
            TPS_CHECK(rows[i] >= 0 && rows[i] < x.rows, "gather_rows: row {} of {}", rows[i], x.rows);
            r[i] = static_cast<int32_t>(rows[i]);
        }
        const int32_t* rows_dev = upload_ints(buffers().gather, r);
        if (graphs_->launching()) cuda::invoke_gather_rows(x.f32(), rows_dev, out.rows, out.cols, out.f32(), stream_);
    }

    void zero(Tensor x) override {
        check_f32(x, "zero");
        if (graphs_->launching()) TPS_CHECK_CUDA(cudaMemsetAsync(x.data, 0, static_cast<size_t>(x.rows * x.cols) * 4, stream_));
    }

    void add_rows_scaled(const Tensor& y, std::span<const int64_t> rows, std::span<const float> scales, Tensor out) override {
        check_f32(y, "add_rows_scaled");
        check_f32(out, "add_rows_scaled");
        TPS_CHECK(out.cols == y.cols && y.rows == static_cast<int64_t>(rows.size()) && rows.size() == scales.size(),
                  "add_rows_scaled: shape mismatch");
        // rows, then the scales' bits: one upload. Rows distinct: the kernel adds each in its own
        // block, so a repeated row would race.
        std::vector<int32_t> packed(2 * rows.size());
        std::vector<char> seen(static_cast<size_t>(out.rows), 0);
        for (size_t i = 0; i < rows.size(); ++i) {
            TPS_CHECK(rows[i] >= 0 && rows[i] < out.rows, "add_rows_scaled: row {} of {}", rows[i], out.rows);
            TPS_CHECK(!seen[static_cast<size_t>(rows[i])]++, "add_rows_scaled: row {} given twice", rows[i]);
            packed[i] = static_cast<int32_t>(rows[i]);
            std::memcpy(&packed[rows.size() + i], &scales[i], 4);
        }
        const int32_t* d = upload_ints(buffers().experts, packed);
        if (graphs_->launching()) {
            cuda::invoke_add_rows_scaled(y.f32(), d, reinterpret_cast<const float*>(d + rows.size()), y.rows, y.cols,
                                         out.f32(), stream_);
        }
    }

    void to_host(const Tensor& x, float* host) override {
        graphs_->finish();  // a recorded or replayed step runs now
        begun_ = nullptr;
        const auto bytes = static_cast<size_t>(x.rows * x.cols) * (x.type == DType::f32 ? 4 : 2);
        read_back(host, x.data, bytes);
    }

    void greedy_rows(const Tensor& logits, int64_t vocab_first, GreedyPick* host) override {
        check_f32(logits, "greedy_rows");
        static_assert(sizeof(GreedyPick) == 12, "the kernel writes 12-byte picks");
        cuda::GreedyParams p{logits.f32(), logits.rows, logits.cols, vocab_first, nullptr};
        p.out = buffers().picks.get(logits.rows * static_cast<int64_t>(sizeof(GreedyPick)));
        TPS_CHECK(cuda::greedy_supported(p), "greedy_rows: {} x {} is not supported", logits.rows, logits.cols);
        if (graphs_->launching()) cuda::invoke_greedy(p, stream_);
        graphs_->finish();  // a recorded or replayed step runs now
        begun_ = nullptr;
        read_back(host, p.out, static_cast<size_t>(logits.rows) * sizeof(GreedyPick));
    }

    // After the step's graph (if any) has run: the parameters change every step, so these kernels
    // stay out of recordings.
    void sample_rows(const Tensor& logits, std::span<const RowSampling> rows, std::span<const PenaltyEntry> penalties,
                     SampledRow* host) override {
        check_f32(logits, "sample_rows");
        check_sample_rows(logits.rows, rows, penalties.size());
        graphs_->finish();  // a recorded or replayed step runs now
        begun_ = nullptr;
        cuda::SampleParams p{logits.f32(), logits.rows, logits.cols, nullptr, nullptr, nullptr};
        TPS_CHECK(cuda::sample_supported(p), "sample_rows: {} x {} is not supported", logits.rows, logits.cols);
        // the rows' parameters, then their penalties (8-byte aligned: RowSampling's size is)
        auto* base = static_cast<std::byte*>(sampling_.get(static_cast<int64_t>(rows.size_bytes() + penalties.size_bytes())));
        upload(base, rows.data(), rows.size_bytes());
        if (!penalties.empty()) upload(base + rows.size_bytes(), penalties.data(), penalties.size_bytes());
        p.how = reinterpret_cast<const RowSampling*>(base);
        p.penalties = reinterpret_cast<const PenaltyEntry*>(base + rows.size_bytes());
        p.out = static_cast<SampledRow*>(buffers().picks.get(logits.rows * static_cast<int64_t>(sizeof(SampledRow))));
        cuda::invoke_sample(p, stream_);
        read_back(host, p.out, static_cast<size_t>(logits.rows) * sizeof(SampledRow));
    }

private:
    // host ints to a device buffer, in stream order (a pageable copy: the host data may go as
    // soon as the call returns)
    // (while a step records: on the upload stream, waited for, so the copy stays out of the graph
    // and is done before it runs)
    const int32_t* upload_ints(Scratch& buf, std::span<const int32_t> host) {
        if (host.empty()) return static_cast<const int32_t*>(buf.get(4));
        void* d = buf.get(static_cast<int64_t>(host.size_bytes()));
        upload(d, host.data(), host.size_bytes());
        return static_cast<const int32_t*>(d);
    }

    void upload(void* device, const void* host, size_t bytes) {
        if (graphs_->mode() != cuda::StepGraphs::Mode::record) {
            // stream order puts it after the last step's kernels and before this one's (or the
            // replayed graph's launch); from pinned memory, as a copy from pageable memory may wait
            // for the stream, which may hold a collective that waits for a peer
            TPS_CHECK_CUDA(cudaMemcpyAsync(device, stage(host, bytes), bytes, cudaMemcpyHostToDevice, stream_));
        } else {
            TPS_CHECK_CUDA(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, upload_stream_));
            TPS_CHECK_CUDA(cudaStreamSynchronize(upload_stream_));
        }
    }

    // Everything issued on the stream done: through the communicators' wait where they queue
    // collectives on it (bounded by their deadline), else a plain one. The staged uploads are
    // then done with.
    void wait_stream() {
        if (stream_wait_) {
            stream_wait_();
        } else {
            TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        }
        stream_idle();
    }

    // `bytes` of device memory to the host: after the queued collectives (whose wait is bounded),
    // a copy to pageable memory waits for the stream.
    void read_back(void* host, const void* device, size_t bytes) {
        if (stream_wait_) stream_wait_();
        TPS_CHECK_CUDA(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
        TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
        stream_idle();
    }

    // (after a wait for the whole stream) What only the stream's queued work used can go.
    void stream_idle() {
        staged_ = 0;
        eager_pool_.retired.clear();  // (the graphs' pool's go at the next step's start)
    }

    // A pinned copy of host bytes to upload from, kept until the stream is next waited for (a
    // step's output): the buffer is used again from its start after that, and grows (after a
    // wait) when a step's uploads outgrow it.
    const void* stage(const void* host, size_t bytes) {
        const size_t at = (staged_ + 15) & ~size_t{15};
        if (at + bytes > pinned_bytes_) {
            wait_stream();  // the copies from it are done
            if (bytes > pinned_bytes_) {
                const size_t want = std::max<size_t>({bytes, 2 * pinned_bytes_, size_t{1} << 20});
                if (pinned_) TPS_CHECK_CUDA(cudaFreeHost(pinned_));
                pinned_ = nullptr;
                pinned_bytes_ = 0;
                TPS_CHECK_CUDA(cudaMallocHost(&pinned_, want));
                pinned_bytes_ = want;
            }
            return stage(host, bytes);
        }
        auto* p = static_cast<std::byte*>(pinned_) + at;
        std::memcpy(p, host, bytes);
        staged_ = at + bytes;
        return p;
    }

    // The buffers a step's inputs and small scratch go to: recorded and replayed steps use their
    // own, whose moves make graphs stale; eager steps theirs. (The GEMM's and attention's
    // workspace, reserved for the largest step, is shared: it does not move.)
    struct StepBuffers {
        Scratch step, ids, gather, positions, picks, experts, tiles;
        explicit StepBuffers(cuda::ScratchPool* pool)
            : step(MemoryTag::workspace, pool), ids(MemoryTag::workspace, pool), gather(MemoryTag::workspace, pool),
              positions(MemoryTag::workspace, pool), picks(MemoryTag::workspace, pool),
              experts(MemoryTag::workspace, pool), tiles(MemoryTag::workspace, pool) {}
    };
    StepBuffers& buffers() { return graphs_->mode() == cuda::StepGraphs::Mode::eager ? eager_ : graphed_; }

    // Whether attention takes the prefill kernel, and if so its query tiles in `p`: where a
    // sequence brings several tokens and the tiles give every multiprocessor a block. Fewer tiles
    // leave the card idle where the decode kernel splits the keys instead (a short chunk after a
    // long prefix). No repeating step (a recorded or replayed decode shape) tiles, nor one whose
    // tiles would all be one token. The tiles are cut at every layer's call, uploaded once.
    bool prefill_tiles(const StepLayout& step, cuda::AttentionParams& p) {
        if (graphs_->repeating() || !cuda::attention_prefill_supported(p)) return false;
        const int64_t per_tile = cuda::attention_tile_tokens(p.heads / p.kv_heads);
        const auto T = static_cast<int64_t>(step.sequence.size());
        tiles_host_.clear();
        for (int64_t t = 0; t < T;) {
            tiles_host_.push_back(static_cast<int32_t>(t));
            const int64_t first = t;
            while (++t < T && t - first < per_tile && step.sequence[t] == step.sequence[first]) {
            }
        }
        tiles_host_.push_back(static_cast<int32_t>(T));
        const auto n_tiles = static_cast<int64_t>(tiles_host_.size()) - 1;
        if (n_tiles == T || n_tiles * p.kv_heads < multiprocessors_) return false;
        // once per step: every layer's attention has the same tiles
        if (tiles_host_ != tiles_uploaded_ || tiles_in_ != &buffers()) {
            tiles_dev_ = upload_ints(buffers().tiles, tiles_host_);
            tiles_uploaded_ = tiles_host_;
            tiles_in_ = &buffers();
        }
        p.tiles = tiles_dev_;
        p.n_tiles = n_tiles;
        return true;
    }

    // positions, sequence indices, per-sequence offsets into the blocks (sequences + 1), blocks
    static void pack_step(const StepLayout& step, std::vector<int32_t>& h) {
        h.assign(step.positions.begin(), step.positions.end());
        h.insert(h.end(), step.sequence.begin(), step.sequence.end());
        int64_t total = 0;
        for (const auto& s : step.sequences) {
            h.push_back(static_cast<int32_t>(total));
            total += s.n_blocks;
        }
        h.push_back(static_cast<int32_t>(total));
        for (const auto& s : step.sequences) h.insert(h.end(), s.blocks, s.blocks + s.n_blocks);
    }

    void upload_step(const StepLayout& step) {
        const auto T = static_cast<int64_t>(step.positions.size());
        const auto S = static_cast<int64_t>(step.sequences.size());
        TPS_CHECK(static_cast<int64_t>(step.sequence.size()) == T, "step layout: {} positions but {} sequence indices",
                  T, step.sequence.size());
        for (int32_t s : step.sequence) TPS_CHECK(s >= 0 && s < S, "step layout: sequence index {} of {}", s, S);
        pack_step(step, step_host_);
        const int32_t* d = upload_ints(buffers().step, step_host_);
        view_.positions = d;
        view_.sequence = d + T;
        view_.block_off = d + 2 * T;
        view_.blocks = d + 2 * T + S + 1;
        view_.tokens = T;
        step_max_keys_ = 1;
        for (int32_t p : step.positions) step_max_keys_ = std::max<int64_t>(step_max_keys_, int64_t{p} + 1);
    }

    // the device copy of `step`: the one uploaded last when its contents are the same (the ops of
    // one step after begin_step), else a fresh upload
    cuda::StepView step_view(const StepLayout& step) {
        if (&step == begun_) return view_;  // the step begin_step uploaded, until its output
        pack_step(step, step_check_);
        if (step_check_ != step_host_) upload_step(step);
        return view_;
    }

    const int32_t* step_positions(std::span<const int32_t> positions) {
        if (static_cast<int64_t>(positions.size()) == view_.tokens &&
            std::equal(positions.begin(), positions.end(), step_host_.begin())) {
            return view_.positions;
        }
        return upload_ints(buffers().positions, positions);
    }

    const float* rope_table(const RopeTable& t) {
        if (rope_host_ != t.inv_freq) {
            // another table (another model on this backend): kernels queued with the old one run
            // first, and graphs that read it are stale
            if (!rope_host_.empty() && graphs_->mode() == cuda::StepGraphs::Mode::eager) {
                TPS_CHECK_CUDA(cudaStreamSynchronize(stream_));
            }
            ++pool_.generation;
            rope_host_ = t.inv_freq;
            void* d = rope_dev_.get(static_cast<int64_t>(rope_host_.size() * 4));
            // (on the upload stream, waited for: this may be inside a recording)
            TPS_CHECK_CUDA(cudaMemcpyAsync(d, rope_host_.data(), rope_host_.size() * 4, cudaMemcpyHostToDevice,
                                           upload_stream_));
            TPS_CHECK_CUDA(cudaStreamSynchronize(upload_stream_));
        }
        return static_cast<const float*>(rope_dev_.get(static_cast<int64_t>(rope_host_.size() * 4)));
    }

    static void layer_planes(DeviceMemory& kv, const KvLayout& L, int64_t layer, void*& k, void*& v) {
        const int64_t elem = L.dtype == DType::f32 ? 4 : 2;
        const int64_t plane = L.blocks * L.block_tokens * L.token_stride() * elem;
        TPS_CHECK(layer >= 0 && layer < L.layers && (layer + 1) * 2 * plane <= kv.bytes(),
                  "KV cache: layer {} is outside a cache of {} layers", layer, L.layers);
        auto* base = static_cast<std::byte*>(kv.data()) + layer * 2 * plane;
        k = base;
        v = base + plane;
    }

    int device_;
    int multiprocessors_ = 1;
    std::string name_;
    cudaStream_t stream_ = nullptr;
    cublasHandle_t cublas_ = nullptr;
    cudaStream_t upload_stream_ = nullptr;
    std::unique_ptr<CudaMemory> cublas_ws_;
    cuda::ScratchPool pool_;
    cuda::ScratchPool eager_pool_;  // (its generation is never read: eager steps record nothing)
    StepBuffers eager_{&eager_pool_}, graphed_{&pool_};
    // graphs point into these; reserve() sizes them for the largest step, so they move only for
    // an op outside the limits a model gave (and then the graphs record again)
    Scratch gemm_{MemoryTag::workspace, &pool_}, partial_{MemoryTag::workspace, &pool_};
    Scratch rope_dev_{MemoryTag::workspace, &pool_};
    // sample_rows' parameters and penalties (never recorded; its old memory, if it grows, goes
    // at a wait like the eager buffers'), reserved for the model's rounds
    Scratch sampling_{MemoryTag::workspace, &eager_pool_};
    std::unique_ptr<cuda::StepGraphs> graphs_;
    std::vector<int32_t> step_host_, step_check_;
    std::vector<cuda::GemvParams> gemv_launches_;  // matmul_multi's, kept to reuse their memory
    std::vector<int32_t> tiles_host_, tiles_uploaded_;  // prefill_tiles
    const StepBuffers* tiles_in_ = nullptr;
    const int32_t* tiles_dev_ = nullptr;
    std::vector<float> rope_host_;
    cuda::StepView view_;
    const StepLayout* begun_ = nullptr;  // the layout begin_step uploaded, until the step's output
    int64_t step_max_keys_ = 1;
    std::function<void()> stream_wait_;  // set_stream_wait
    void* pinned_ = nullptr;             // stage()
    size_t pinned_bytes_ = 0, staged_ = 0;
};

}  // namespace

std::string cuda_backend_unavailable(int device) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return std::string("no CUDA device: cudaGetDeviceCount: ") + cudaGetErrorString(e);
    }
    if (device < 0 || device >= n) {
        return "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) + " visible)";
    }
    return cuda::kernels_unavailable(device);
}

std::unique_ptr<Backend> make_cuda_backend(int device) {
    const std::string why = cuda_backend_unavailable(device);
    if (!why.empty()) throw DeviceError(why);
    return std::make_unique<CudaBackend>(device);
}

}  // namespace tps
