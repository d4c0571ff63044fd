// CpuBackend: the reference backend and the one every test runs on. Activations are f32 in host
// memory; each op splits its rows (or heads) over the thread pool.
#include "kernels.h"
#include "ops.h"
#include "thread_pool.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/backend.h"
#include "tpserve/engine/numeric.h"
#include "tpserve/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include <sched.h>

namespace tps {

Tensor Tensor::slice_rows(int64_t first, int64_t n) const noexcept {
    Tensor t = *this;
    t.rows = n;
    t.data = static_cast<std::byte*>(data) + first * cols * static_cast<int64_t>(type == DType::f32 ? 4 : 2);
    return t;
}

Tensor Tensor::reshape(int64_t r, int64_t c) const noexcept {
    Tensor t = *this;
    t.rows = r;
    t.cols = c;
    return t;
}

namespace {

class HostMemory final : public DeviceMemory {
public:
    HostMemory(int64_t bytes, MemoryTag tag) : buf_(bytes, tag) {}
    void* data() noexcept override { return buf_.data(); }
    int64_t bytes() const noexcept override { return buf_.bytes(); }

private:
    Buffer buf_;
};

void check_f32(const Tensor& t, const char* op) {
    TPS_CHECK(t.type == DType::f32, "{}: the CPU backend computes in f32, got {}", op, dtype_name(t.type));
}

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads) : pool_(threads) {}

    std::string_view name() const noexcept override { return "cpu"; }
    bool computes_experts() const noexcept override { return true; }

    std::unique_ptr<DeviceMemory> allocate(int64_t bytes, MemoryTag tag) override {
        return std::make_unique<HostMemory>(bytes, tag);
    }

    void embedding(const Weight& table, int64_t vocab_first, std::span<const int32_t> ids, Tensor out) override {
        check_f32(out, "embedding");
        TPS_CHECK(out.rows == static_cast<int64_t>(ids.size()) && out.cols == table.cols, "embedding: shape mismatch");
        pool_.parallel_for(out.rows, 1, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) {
                float* dst = out.f32() + i * out.cols;
                const int64_t row = ids[static_cast<size_t>(i)] - vocab_first;
                if (row < 0 || row >= table.rows) {
                    std::fill(dst, dst + out.cols, 0.0f);
                } else {
                    weight_row_to_f32(table, row, 0, table.cols, dst);
                }
            }
        });
    }

    void rmsnorm(const Tensor& x, const Vec& w, float eps, Tensor out) override {
        check_f32(x, "rmsnorm");
        TPS_CHECK(w.n == x.cols && out.cols == x.cols && out.rows == x.rows, "rmsnorm: shape mismatch");
        pool_.parallel_for(x.rows, 4, [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) cpu::rmsnorm_row(x.f32() + r * x.cols, w.data(), x.cols, eps, out.f32() + r * x.cols);
        });
    }

    void matmul(const Weight& w, const Tensor& x, Tensor y, const Weight* next) override {
        const Product one[] = {{&w, y}};
        matmul_multi(x, one, next);
    }

    void matmul_multi(const Tensor& x, std::span<const Product> products, const Weight* next) override {
        check_f32(x, "matmul");
        int64_t total = 0;
        for (const auto& p : products) {
            TPS_CHECK(x.cols == p.w->cols && p.y.cols == p.w->rows && p.y.rows == x.rows,
                      "matmul: x ({} x {}) W ({} x {}) y ({} x {})", x.rows, x.cols, p.w->rows, p.w->cols, p.y.rows,
                      p.y.cols);
            total += p.w->rows;
        }
        // Decode: each thread streams one contiguous range of the products' rows (end to end) and,
        // in its last rows, prefetches where its range of `next` starts. Prefill: blocks of rows
        // that stay in cache while every token group passes over them.
        const bool decode = x.rows <= 4;
        const int threads = pool_.size();
        const int64_t chunk = std::max<int64_t>(16, (total + threads - 1) / threads);
        pool_.parallel_for(
            total, decode ? 16 : 64,
            [&](int64_t b, int64_t e) {
                cpu::PrefetchNext ahead;
                if (decode && next) {
                    const int64_t next_chunk = std::max<int64_t>(16, (next->rows + threads - 1) / threads);
                    const int64_t row = std::min(next->rows - 1, b / chunk * next_chunk);
                    ahead.start = next->row(row);
                    ahead.bytes = std::min<int64_t>(16 * 1024, (next->rows - row) * next->row_bytes);
                }
                int64_t offset = 0;
                for (size_t i = 0; i < products.size(); ++i) {
                    const auto& p = products[i];
                    const int64_t lo = std::max(b, offset), hi = std::min(e, offset + p.w->rows);
                    // only the product that ends the range prefetches past it
                    const bool last = hi == e;
                    if (lo < hi) {
                        cpu::matmul_rows(*p.w, lo - offset, hi - offset, x.f32(), x.cols, x.rows, p.y.f32(), p.y.cols,
                                         last ? ahead : cpu::PrefetchNext{});
                    }
                    offset += p.w->rows;
                }
            },
            decode ? 1 : 4);
    }

    void add_bias(Tensor y, const Vec& b) override {
        TPS_CHECK(b.n == y.cols, "add_bias: {} values for {} columns", b.n, y.cols);
        for (int64_t r = 0; r < y.rows; ++r) {
            float* row = y.f32() + r * y.cols;
            for (int64_t i = 0; i < y.cols; ++i) row[i] += b.data()[i];
        }
    }

    void rope(Tensor x, int64_t head_dim, const RopeTable& table, std::span<const int32_t> positions) override {
        check_f32(x, "rope");
        TPS_CHECK(x.cols % head_dim == 0 && static_cast<int64_t>(positions.size()) == x.rows, "rope: shape mismatch");
        const int64_t heads = x.cols / head_dim;
        pool_.parallel_for(x.rows, 4, [&](int64_t b, int64_t e) {
            std::vector<float> c(static_cast<size_t>(table.rotary_dims / 2)), s(c.size());
            for (int64_t r = b; r < e; ++r) {
                cpu::rope_row(x.f32() + r * x.cols, heads, head_dim, table, positions[static_cast<size_t>(r)], c.data(),
                              s.data());
            }
        });
    }

    void kv_store(DeviceMemory& kv, const KvLayout& L, int64_t layer, const Tensor& k, const Tensor& v,
                  const StepLayout& step) override {
        const int64_t stride = L.token_stride();
        TPS_CHECK(k.cols == stride && v.cols == stride && k.rows == v.rows, "kv_store: shape mismatch");
        const int64_t elem = L.dtype == DType::f32 ? 4 : 2;
        const int64_t plane = L.blocks * L.block_tokens * stride * elem;  // bytes of K (or V) of one layer
        std::byte* k_base = static_cast<std::byte*>(kv.data()) + layer * 2 * plane;
        std::byte* v_base = k_base + plane;
        for (int64_t t = 0; t < k.rows; ++t) {
            const auto& s = step.sequences[static_cast<size_t>(step.sequence[static_cast<size_t>(t)])];
            const int64_t pos = step.positions[static_cast<size_t>(t)];
            const int64_t slot = s.blocks[pos / L.block_tokens] * L.block_tokens + pos % L.block_tokens;
            store(k.f32() + t * stride, k_base + slot * stride * elem, stride, L.dtype);
            store(v.f32() + t * stride, v_base + slot * stride * elem, stride, L.dtype);
        }
    }

    void attention(const Tensor& q, const DeviceMemory& kv, const KvLayout& L, int64_t layer, const StepLayout& step,
                   int64_t heads, Tensor out) override {
        check_f32(q, "attention");
        TPS_CHECK(q.cols == heads * L.head_dim && out.cols == q.cols && heads % L.kv_heads == 0,
                  "attention: shape mismatch");
        const int64_t elem = L.dtype == DType::f32 ? 4 : 2;
        const int64_t plane = L.blocks * L.block_tokens * L.token_stride() * elem;
        const auto* k_base = static_cast<const std::byte*>(const_cast<DeviceMemory&>(kv).data()) + layer * 2 * plane;
        const auto* v_base = k_base + plane;
        const int64_t group = heads / L.kv_heads;
        pool_.parallel_for(q.rows * heads, 1, [&](int64_t b, int64_t e) {
            std::vector<float> scores(static_cast<size_t>(L.block_tokens + 8));  // + padding for 8-wide exps
            for (int64_t i = b; i < e; ++i) {
                const int64_t t = i / heads;
                const int64_t h = i % heads;
                const auto& s = step.sequences[static_cast<size_t>(step.sequence[static_cast<size_t>(t)])];
                cpu::attention_one(q.f32() + t * q.cols + h * L.head_dim, k_base, v_base, L, s, h / group,
                                   step.positions[static_cast<size_t>(t)], out.f32() + t * out.cols + h * L.head_dim,
                                   scores.data());
            }
        });
    }

    void swiglu(const Tensor& gate, const Tensor& up, Tensor out) override {
        TPS_CHECK(gate.cols == up.cols && gate.rows == up.rows && out.cols == gate.cols, "swiglu: shape mismatch");
        pool_.parallel_for(gate.rows, 4, [&](int64_t b, int64_t e) {
            for (int64_t r = b; r < e; ++r) {
                cpu::swiglu_row(gate.f32() + r * gate.cols, up.f32() + r * up.cols, gate.cols, out.f32() + r * out.cols);
            }
        });
    }

    void add(Tensor x, const Tensor& y) override {
        TPS_CHECK(x.rows == y.rows && x.cols == y.cols, "add: shape mismatch");
        const int64_t n = x.rows * x.cols;
        float* a = x.f32();
        const float* c = y.f32();
        for (int64_t i = 0; i < n; ++i) a[i] += c[i];
    }

    void gather_rows(const Tensor& x, std::span<const int64_t> rows, Tensor out) override {
        check_f32(x, "gather_rows");
        TPS_CHECK(out.cols == x.cols && out.rows == static_cast<int64_t>(rows.size()), "gather_rows: shape mismatch");
        for (size_t i = 0; i < rows.size(); ++i) {
            TPS_CHECK(rows[i] >= 0 && rows[i] < x.rows, "gather_rows: row {} of {}", rows[i], x.rows);
            std::copy_n(x.f32() + rows[i] * x.cols, x.cols, out.f32() + static_cast<int64_t>(i) * out.cols);
        }
    }

    void zero(Tensor x) override {
        check_f32(x, "zero");
        std::fill_n(x.f32(), x.rows * x.cols, 0.0f);
    }

    void add_rows_scaled(const Tensor& y, std::span<const int64_t> rows, std::span<const float> scales, Tensor out) override {
        check_f32(y, "add_rows_scaled");
        TPS_CHECK(out.cols == y.cols && y.rows == static_cast<int64_t>(rows.size()) && rows.size() == scales.size(),
                  "add_rows_scaled: shape mismatch");
        for (size_t i = 0; i < rows.size(); ++i) {
            TPS_CHECK(rows[i] >= 0 && rows[i] < out.rows, "add_rows_scaled: row {} of {}", rows[i], out.rows);
            const float* a = y.f32() + static_cast<int64_t>(i) * y.cols;
            float* b = out.f32() + rows[i] * out.cols;
            for (int64_t c = 0; c < y.cols; ++c) b[c] += scales[i] * a[c];
        }
    }

    void to_host(const Tensor& x, float* host) override {
        std::memcpy(host, x.data, static_cast<size_t>(x.rows * x.cols) * 4);
    }

    void greedy_rows(const Tensor& logits, int64_t vocab_first, GreedyPick* host) override {
        check_f32(logits, "greedy_rows");
        for (int64_t r = 0; r < logits.rows; ++r) {
            const float* row = logits.f32() + r * logits.cols;
            int64_t arg = 0;
            float m = row[0];
            for (int64_t i = 1; i < logits.cols; ++i) {
                if (row[i] > m) {
                    m = row[i];
                    arg = i;
                }
            }
            double s = 0;
            for (int64_t i = 0; i < logits.cols; ++i) s += std::exp(static_cast<double>(row[i] - m));
            host[r] = {m, static_cast<int32_t>(vocab_first + arg), static_cast<float>(s)};
        }
    }

    void sample_rows(const Tensor& logits, std::span<const RowSampling> rows, std::span<const PenaltyEntry> penalties,
                     SampledRow* host) override {
        check_f32(logits, "sample_rows");
        check_sample_rows(logits.rows, rows, penalties.size());
        pool_.parallel_for(logits.rows, 1, [&](int64_t b, int64_t e) {
            RowScratch scratch;
            for (int64_t r = b; r < e; ++r) {
                const auto& how = rows[static_cast<size_t>(r)];
                const Sampled s = sample_row(std::span(logits.f32() + r * logits.cols, static_cast<size_t>(logits.cols)), how,
                                             penalties, scratch);
                SampledRow& out = host[r];
                out = SampledRow{};
                out.token = s.token;
                out.logprob = s.logprob;
                out.n_top = static_cast<int32_t>(s.top.size());
                for (size_t i = 0; i < s.top.size(); ++i) {
                    out.top_token[i] = s.top[i].token;
                    out.top_logprob[i] = s.top[i].logprob;
                }
            }
        });
    }

private:
    static void store(const float* src, std::byte* dst, int64_t n, DType dtype) {
        if (dtype == DType::f32) {
            std::memcpy(dst, src, static_cast<size_t>(n) * 4);
            return;
        }
        auto* d = reinterpret_cast<uint16_t*>(dst);
        if (dtype == DType::f16) {
            for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
        } else {
            for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
        }
    }

    cpu::ThreadPool pool_;
};

}  // namespace

int usable_cpus() noexcept {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::unique_ptr<Backend> make_cpu_backend(int threads) {
    if (threads <= 0) threads = usable_cpus();
    return std::make_unique<CpuBackend>(threads);
}

}  // namespace tps
