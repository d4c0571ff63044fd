// y = x W^T on the CPU. Decode (up to 4 tokens): each weight row is streamed once and dotted
// with every token, so the pass runs at memory bandwidth. Prefill: 1-row x 6-token register
// tiles (two FMA chains per token, 12 accumulators) over a block of rows that stays in cache
// while every group of 6 tokens passes over it; each weight register is used 6 times. Both paths
// sum every dot product in the same order, so results are batch-invariant. Weights of every
// format are expanded 16 at a time in registers (simd.h); past 12 tokens, the GGML block formats'
// rows are expanded once into 64 KiB of f32 and the tiles run over that.
#include "kernels.h"
#include "simd.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <atomic>
#include <vector>

namespace tps::cpu {
namespace {

std::atomic<bool> g_force_scalar{false};

// Elements [k, K) of a row as f32, for the tail that is not a multiple of 8 (plain types only:
// block types have rows of whole 32-element blocks).
TPS_AVX2 float tail_dot(const Weight& w, const std::byte* row, int64_t k, const float* x) {
    float out = 0;
    float tmp[8];
    const int64_t n = w.cols - k;
    if (n <= 0) return 0;
    row_to_f32(w.type, row, k, n, tmp);
    for (int64_t i = 0; i < n; ++i) out += tmp[i] * x[k + i];
    return out;
}

// Software prefetch distance: at least 8 KiB and 4 rows ahead. In bytes, not rows: rows of 16-bit
// weights are half as long as f32 ones, and 4 of them (4.6 KiB on SmolLM2's 576-wide matrices)
// left f16 decode at 84-87% of this machine's higher read bandwidth (71 GB/s); f32 rows reach
// 9.2 KiB in 4 rows, and f16 now prefetches as far (docs/perf.md).
constexpr int64_t kAheadBytes = 8 * 1024;
constexpr int64_t kAheadMinRows = 4;

// One row x NT tokens: y[t][r] = dot(row r, x[t]). Two FMA chains per token, the even and the odd
// 8-weight blocks, summed at the end, then the tail: the one summation order of every path, so a
// token's result does not depend on how many other tokens share its step (batch invariance: a
// sequence decoded beside 31 others gives the same logits, bit for bit, as decoded alone, and a
// prompt gives the same whether prefilled whole or in chunks). int8 sums the stored integers
// times x, in 32-weight steps of its own (below) before the shared 16- and 8-weight ones, and
// multiplies the finished sum by the row's scale. With Prefetch (decode), every 16
// weights whose index / 16 has no bit of `prefetch_mask` set also prefetch into `ahead`, at the
// same offset in bytes as the row's own (one prefetch per cache line, not one per 16 weights).
template <DType T, int NT, bool Prefetch>
TPS_AVX2 void row_dot(const Weight& w, int64_t r, const float* x, int64_t xs, float* y, int64_t ys,
                      [[maybe_unused]] const char* ahead, [[maybe_unused]] int64_t step_bytes,
                      [[maybe_unused]] int64_t prefetch_mask) {
    const int64_t K = w.cols;
    const int64_t K16 = K & ~int64_t{15};
    const std::byte* row = w.row(r);
    __m256 a[NT][2];
    for (int t = 0; t < NT; ++t) a[t][0] = a[t][1] = _mm256_setzero_ps();
    int64_t k = 0;
    if constexpr (T == DType::int8) {
        // int8 expands so cheaply that two FMA chains per token, not memory, would set its pace:
        // 32 weights per step as two independent mul + fma pairs, each added to its accumulator
        // once (its own summation order, the same for every number of tokens)
        const int64_t K32 = K & ~int64_t{31};
        for (; k < K32; k += 32) {
            if constexpr (Prefetch) {
                if (((k / 16) & prefetch_mask) == 0) _mm_prefetch(ahead + (k / 16) * step_bytes, _MM_HINT_T0);
                if (((k / 16 + 1) & prefetch_mask) == 0) _mm_prefetch(ahead + (k / 16 + 1) * step_bytes, _MM_HINT_T0);
            }
            const __m256 w0 = Load8<T>::at(row, k), w1 = Load8<T>::at(row, k + 8);
            const __m256 w2 = Load8<T>::at(row, k + 16), w3 = Load8<T>::at(row, k + 24);
            for (int t = 0; t < NT; ++t) {
                const float* xt = x + t * xs + k;
                const __m256 p0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), _mm256_mul_ps(w0, _mm256_loadu_ps(xt)));
                const __m256 p1 = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xt + 24), _mm256_mul_ps(w2, _mm256_loadu_ps(xt + 16)));
                a[t][0] = _mm256_add_ps(a[t][0], p0);
                a[t][1] = _mm256_add_ps(a[t][1], p1);
            }
        }
    }
    for (; k < K16; k += 16) {
        if constexpr (Prefetch) {
            if (((k / 16) & prefetch_mask) == 0) _mm_prefetch(ahead + (k / 16) * step_bytes, _MM_HINT_T0);
        }
        __m256 w0, w1;
        Load16<T>::at(row, k, w0, w1);
        for (int t = 0; t < NT; ++t) {
            a[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + k), a[t][0]);
            a[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * xs + k + 8), a[t][1]);
        }
    }
    if constexpr (!ggml::engine_block_format(T)) {  // (block formats' rows are whole 32-element blocks)
        for (; k + 8 <= K; k += 8) {
            const __m256 w0 = Load8<T>::at(row, k);
            for (int t = 0; t < NT; ++t) a[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + k), a[t][0]);
        }
    }
    for (int t = 0; t < NT; ++t) {
        float v = hsum(_mm256_add_ps(a[t][0], a[t][1]));
        if (k < K) v += tail_dot(w, row, k, x + t * xs);  // only rows whose length is not a multiple of 8
        if constexpr (T == DType::int8) v *= w.scale(r);
        y[t * ys + r] = v;
    }
}

// Decode (up to 4 tokens): each row streamed once, prefetching kAheadBytes ahead; in the last
// rows, the start of what the next matmul reads instead.
template <DType T, int NT>
TPS_AVX2 void rows_small(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, float* y,
                         int64_t ys, PrefetchNext next) {
    // bytes per 16 weights, to prefetch the same place a few rows ahead
    const int64_t step_bytes = w.row_bytes * 16 / std::max<int64_t>(16, w.cols);
    const int64_t rows_ahead = std::max(kAheadMinRows, (kAheadBytes + w.row_bytes - 1) / w.row_bytes);
    // 16 weights of f16 are 32 bytes: every other step's prefetch would hit the line just asked for
    int64_t every = 1;
    while (step_bytes > 0 && every * 2 * step_bytes <= 64) every *= 2;
    for (int64_t r = r0; r < r1; ++r) {
        const char* ahead = reinterpret_cast<const char*>(w.row(std::min(r + rows_ahead, r1 - 1)));
        if (r + rows_ahead >= r1 && next.start) {
            const int64_t into = (r + rows_ahead - r1) * w.row_bytes;
            // the whole row's worth of prefetches must stay inside what the next matmul reads
            ahead = into + w.row_bytes <= next.bytes ? reinterpret_cast<const char*>(next.start) + into : ahead;
        }
        row_dot<T, NT, true>(w, r, x, xs, y, ys, ahead, step_bytes, every - 1);
    }
}

template <DType T, int NT>
TPS_AVX2 void token_group(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, float* y, int64_t ys) {
    for (int64_t r = r0; r < r1; ++r) row_dot<T, NT, false>(w, r, x, xs, y, ys, nullptr, 0, 0);
}

// Rows [r, r + n) of w as f32, n * w.cols floats (a block format's rows are whole 32-element
// blocks, so 16 at a time covers them).
template <DType T>
TPS_AVX2 void expand_rows(const Weight& w, int64_t r, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const std::byte* row = w.row(r + i);
        float* o = out + i * w.cols;
        for (int64_t k = 0; k < w.cols; k += 16) {
            __m256 a, b;
            Load16<T>::at(row, k, a, b);
            _mm256_storeu_ps(o + k, a);
            _mm256_storeu_ps(o + k + 8, b);
        }
    }
}

template <DType T>
TPS_AVX2 void token_groups(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n_tok, float* y,
                           int64_t ys);

template <DType T>
TPS_AVX2 void rows_avx2(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n_tok, float* y,
                        int64_t ys, PrefetchNext next) {
    switch (n_tok) {
        case 1: return rows_small<T, 1>(w, r0, r1, x, xs, y, ys, next);
        case 2: return rows_small<T, 2>(w, r0, r1, x, xs, y, ys, next);
        case 3: return rows_small<T, 3>(w, r0, r1, x, xs, y, ys, next);
        case 4: return rows_small<T, 4>(w, r0, r1, x, xs, y, ys, next);
        default: break;
    }
    // The GGML block formats: expanding a block to f32 costs more than the FMAs that use it at
    // decode's few tokens (docs/perf.md), so for many tokens their rows are expanded once.
    if (ggml::engine_block_format(T) && n_tok > 12) {
        // 64 KiB of rows at a time expanded to f32, then every token group passes over them as over
        // f32 weights: one expansion per row whatever the tokens, where each group paid its own.
        // The expanded values are Load16's, summed in row_dot's order: the same bits as decode's.
        // (From 3 groups on: at 2, storing and reloading the f32 rows cost q8_0 more than its
        // second expansion, 20% of a batch-8 step; docs/perf.md.)
        thread_local std::vector<float> expanded;
        const int64_t block = std::max<int64_t>(1, 16 * 1024 / w.cols);
        Weight f;
        f.type = DType::f32;
        f.cols = w.cols;
        f.row_bytes = w.cols * 4;
        for (int64_t rb = r0; rb < r1; rb += block) {
            const int64_t n = std::min(block, r1 - rb);
            if (expanded.size() < static_cast<size_t>(n * w.cols)) expanded.resize(static_cast<size_t>(n * w.cols));
            expand_rows<T>(w, rb, n, expanded.data());
            f.rows = n;
            f.data = reinterpret_cast<const std::byte*>(expanded.data());
            token_groups<DType::f32>(f, 0, n, x, xs, n_tok, y + rb, ys);
        }
        return;
    }
    token_groups<T>(w, r0, r1, x, xs, n_tok, y, ys);
}

template <DType T>
TPS_AVX2 void token_groups(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n_tok, float* y,
                           int64_t ys) {
    // Groups of 6 tokens, row by row: 12 accumulators, each weight load used 6 times, the group's
    // activations held in L1 while the block's rows stream from L2. int8's 32-weight steps hold
    // four weight registers: groups of 4 keep its accumulators out of memory. (A token's sums do
    // not depend on its group, so any grouping is batch-invariant.)
    constexpr int64_t group = T == DType::int8 ? 4 : 6;
    for (int64_t t0 = 0; t0 < n_tok; t0 += group) {
        const float* xt = x + t0 * xs;
        float* yt = y + t0 * ys;
        switch (std::min<int64_t>(group, n_tok - t0)) {
            case 6: token_group<T, 6>(w, r0, r1, xt, xs, yt, ys); break;
            case 5: token_group<T, 5>(w, r0, r1, xt, xs, yt, ys); break;
            case 4: token_group<T, 4>(w, r0, r1, xt, xs, yt, ys); break;
            case 3: token_group<T, 3>(w, r0, r1, xt, xs, yt, ys); break;
            case 2: token_group<T, 2>(w, r0, r1, xt, xs, yt, ys); break;
            default: token_group<T, 1>(w, r0, r1, xt, xs, yt, ys); break;
        }
    }
}

}  // namespace

bool have_avx2() noexcept {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
    return ok && !g_force_scalar.load(std::memory_order_relaxed);
}

void force_scalar(bool on) noexcept { g_force_scalar.store(on); }

void matmul_rows_reference(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n_tok,
                           float* y, int64_t ys) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
        weight_row_to_f32(w, r, 0, w.cols, row.data());
        for (int64_t t = 0; t < n_tok; ++t) {
            double acc = 0;
            for (int64_t k = 0; k < w.cols; ++k) acc += static_cast<double>(row[static_cast<size_t>(k)]) * x[t * xs + k];
            y[t * ys + r] = static_cast<float>(acc);
        }
    }
}

void matmul_rows(const Weight& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n_tok, float* y,
                 int64_t ys, PrefetchNext next) {
    if (!have_avx2()) return matmul_rows_reference(w, r0, r1, x, xs, n_tok, y, ys);
    switch (w.type) {
        case DType::f32: return rows_avx2<DType::f32>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::f16: return rows_avx2<DType::f16>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::bf16: return rows_avx2<DType::bf16>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::int8: return rows_avx2<DType::int8>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q8_0: return rows_avx2<DType::q8_0>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q4_0: return rows_avx2<DType::q4_0>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q4_1: return rows_avx2<DType::q4_1>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q5_0: return rows_avx2<DType::q5_0>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q5_1: return rows_avx2<DType::q5_1>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q2_k: return rows_avx2<DType::q2_k>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q3_k: return rows_avx2<DType::q3_k>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q4_k: return rows_avx2<DType::q4_k>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q5_k: return rows_avx2<DType::q5_k>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::q6_k: return rows_avx2<DType::q6_k>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::iq4_nl: return rows_avx2<DType::iq4_nl>(w, r0, r1, x, xs, n_tok, y, ys, next);
        case DType::iq4_xs: return rows_avx2<DType::iq4_xs>(w, r0, r1, x, xs, n_tok, y, ys, next);
        default:
            throw InputError(fmt::format("matmul: {} weights are not supported by the CPU backend", dtype_name(w.type)));
    }
}

}  // namespace tps::cpu
