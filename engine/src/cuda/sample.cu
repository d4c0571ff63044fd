// One block per row. Candidates are never sorted: every cut of row_sampling.h is a prefix of the
// sorted order, found by a radix select over the logits' order-preserving 32-bit keys (four
// passes of 8-bit digits, each counting tokens and adding their integer weights per digit, in
// shared memory; a warp adds one count and one weight per digit it holds). The token at a
// position is then the j-th of its key's ties in token order, found by one ordered pass. Integer weights make the sums
// independent of the order the threads add them in: a seed gives the same tokens on every run.
#include "common.cuh"
#include "cuda_check.h"
#include "sample.cuh"

namespace tps::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Float order as unsigned order (larger logit, larger key); -0 and +0 one key, as they compare.
__device__ __forceinline__ uint32_t key_of(float l) {
    const uint32_t u = __float_as_uint(l == 0.0f ? 0.0f : l);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float logit_of(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// No contraction into FMAs, so the host's float arithmetic is repeated exactly.
__device__ __forceinline__ uint64_t weight_of(float l, float m, float t) {
    return sampling::weight_from(expf(__fdiv_rn(__fsub_rn(l, m), t)));
}

__device__ __forceinline__ float penalised_rn(float l, const PenaltyEntry& p) {
    if (p.repetition != 1.0f) l = l > 0 ? __fdiv_rn(l, p.repetition) : __fmul_rn(l, p.repetition);
    return __fsub_rn(l, p.subtract);
}

struct Shared {
    uint32_t count[256];
    unsigned long long weight[256];
    // block reductions
    float f[kWarps];
    int64_t at[kWarps];
    double d[kWarps];
    unsigned long long u[kWarps];
    uint32_t c[kWarps];
    // a select's result
    uint32_t key, count_above, ties;
    unsigned long long weight_above;
    int32_t found;
    int32_t n_list;
    uint32_t list_key[kMaxTopLogprobs];
    int32_t list_token[kMaxTopLogprobs];
};

struct Row {
    const float* l;
    int64_t n;
    float m, t;
    bool weighted;  // temperature > 0: weights are counted
};

// Where the running measure (counts, or weights) in sorted order first exceeds `target`: the key
// there, the tokens and weight before that key, and how many tokens hold it.
struct Found {
    uint32_t key, count_above, ties;
    uint64_t weight_above;
};

__device__ Found select(const Row& r, bool by_weight, uint64_t target, Shared& sh) {
    const int lane = threadIdx.x % 32;
    uint32_t prefix = 0, mask = 0, ties = 0;
    uint32_t count_above = 0;
    uint64_t weight_above = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += kThreads) {
            sh.count[b] = 0;
            sh.weight[b] = 0;
        }
        __syncthreads();
        for (int64_t base = 0; base < r.n; base += kThreads) {
            const int64_t i = base + threadIdx.x;
            const float l = i < r.n ? r.l[i] : 0.0f;
            const uint32_t k = key_of(l);
            const bool in = i < r.n && (k & mask) == prefix;
            const unsigned active = __ballot_sync(0xffffffffu, in);
            if (in) {
                const uint32_t digit = (k >> shift) & 0xffu;
                const unsigned peers = __match_any_sync(active, digit);
                const bool leader = lane == __ffs(peers) - 1;
                if (leader) atomicAdd(&sh.count[digit], static_cast<uint32_t>(__popc(peers)));
                if (r.weighted) {
                    // one 64-bit atomic per digit a warp holds: the weights (at most 2^40) added
                    // as 20-bit halves, whose sums over 32 lanes fit 32 bits
                    const uint64_t w = weight_of(l, r.m, r.t);
                    const unsigned lo = __reduce_add_sync(peers, static_cast<unsigned>(w & 0xfffffu));
                    const unsigned hi = __reduce_add_sync(peers, static_cast<unsigned>(w >> 20));
                    const uint64_t sum = (static_cast<uint64_t>(hi) << 20) + lo;
                    if (leader && sum) atomicAdd(&sh.weight[digit], static_cast<unsigned long long>(sum));
                }
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            // digits from the largest down; the last one with tokens if the target lies past them
            uint64_t acc = by_weight ? weight_above : count_above;
            int chosen = -1, last = -1;
            for (int b = 255; b >= 0; --b) {
                if (sh.count[b] == 0) continue;
                last = b;
                const uint64_t here = by_weight ? sh.weight[b] : sh.count[b];
                if (acc + here > target) {
                    chosen = b;
                    break;
                }
                acc += here;
                count_above += sh.count[b];
                weight_above += sh.weight[b];
            }
            if (chosen < 0) {  // past the end: the last token (undo the last digit's sums)
                chosen = last;
                count_above -= sh.count[last];
                weight_above -= sh.weight[last];
            }
            sh.key = prefix | (static_cast<uint32_t>(chosen) << shift);
            sh.count_above = count_above;
            sh.weight_above = weight_above;
            sh.ties = sh.count[chosen];
        }
        __syncthreads();
        prefix = sh.key;
        mask |= 0xffu << shift;
        count_above = sh.count_above;
        weight_above = sh.weight_above;
        ties = sh.ties;
        __syncthreads();  // read by all before the next pass (or select) writes
    }
    return {prefix, count_above, ties, weight_above};
}

// The `j`-th token (in token order) whose key is `key`.
__device__ int32_t nth_tie(const Row& r, uint32_t key, uint32_t j, Shared& sh) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) sh.found = -1;
    uint32_t seen = 0;
    __syncthreads();
    for (int64_t base = 0; base < r.n; base += kThreads) {
        const int64_t i = base + threadIdx.x;
        const bool hit = i < r.n && key_of(r.l[i]) == key;
        const unsigned votes = __ballot_sync(0xffffffffu, hit);
        if (lane == 0) sh.c[warp] = __popc(votes);
        __syncthreads();
        uint32_t before = seen;
        for (int w = 0; w < warp; ++w) before += sh.c[w];
        before += __popc(votes & ((1u << lane) - 1u));
        if (hit && before == j) sh.found = static_cast<int32_t>(i);
        uint32_t total = 0;
        for (int w = 0; w < kWarps; ++w) total += sh.c[w];
        seen += total;
        __syncthreads();
        const int32_t found = sh.found;
        __syncthreads();  // read by all before the next ballot (or call) writes
        if (found >= 0) return found;
    }
    return -1;
}

// Block sums, the same order on every run (`scratch`: one slot per warp in shared memory).
template <class T>
__device__ T block_sum(T v, T* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    T total = 0;
    for (int w = 0; w < kWarps; ++w) total += scratch[w];
    __syncthreads();
    return total;
}

// The weight of the first `n` positions, from a select of position n - 1.
__device__ uint64_t prefix_weight(const Row& r, int64_t n, Shared& sh) {
    const Found f = select(r, false, static_cast<uint64_t>(n - 1), sh);
    return f.weight_above + static_cast<uint64_t>(n - f.count_above) * weight_of(logit_of(f.key), r.m, r.t);
}

// Where the running weight first exceeds `target`: the select there and the tie's index j, the
// token being the j-th of the key's ties (position f.count_above + j).
struct AtWeight {
    Found f;
    uint32_t j;
    uint64_t w;  // the weight of each of the key's ties
    // the weight of the positions up to and including this one
    __device__ uint64_t through() const { return f.weight_above + (static_cast<uint64_t>(j) + 1) * w; }
};

__device__ AtWeight at_weight(const Row& r, uint64_t target, Shared& sh) {
    const Found f = select(r, true, target, sh);
    const uint64_t w = weight_of(logit_of(f.key), r.m, r.t);
    uint64_t j = w ? (target - f.weight_above) / w : 0;
    if (j >= f.ties) j = f.ties - 1;
    return {f, static_cast<uint32_t>(j), w};
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleParams p) {
    __shared__ Shared sh;
    const RowSampling how = p.how[blockIdx.x];
    float* row = p.logits + blockIdx.x * p.cols;
    const int64_t n = p.cols;
    SampledRow* out = p.out + blockIdx.x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    // penalties, one entry per thread (a row's tokens are distinct: Backend::sample_rows); a long
    // prompt under a repetition penalty lists thousands
    for (int32_t i = threadIdx.x; i < how.penalties_count; i += kThreads) {
        const PenaltyEntry e = p.penalties[how.penalties_first + i];
        if (e.token >= 0 && e.token < n) row[e.token] = penalised_rn(row[e.token], e);
    }
    __syncthreads();
    const float* l = row;

    // the first maximum, and whether any logit is NaN
    float m = -INFINITY;
    int64_t at = n;
    bool nan = false;
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
        const float v = l[i];
        nan |= isnan(v);
        if (v > m || (v == m && i < at)) {
            m = v;
            at = i;
        }
    }
    nan = __syncthreads_or(nan);
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        const int64_t at2 = __shfl_xor_sync(0xffffffffu, at, o);
        if (m2 > m || (m2 == m && at2 < at)) {
            m = m2;
            at = at2;
        }
    }
    if (lane == 0) {
        sh.f[warp] = m;
        sh.at[warp] = at;
    }
    __syncthreads();
    m = sh.f[0];
    at = sh.at[0];
    for (int w = 1; w < kWarps; ++w) {
        if (sh.f[w] > m || (sh.f[w] == m && sh.at[w] < at)) {
            m = sh.f[w];
            at = sh.at[w];
        }
    }
    if (nan || !isfinite(m)) {
        if (threadIdx.x == 0) {
            *out = SampledRow{};
            out->status = nan ? SampledRow::nan_logits : SampledRow::no_finite_max;
        }
        return;
    }
    // log-softmax's normaliser; weights and the min_p count when sampling
    double z = 0;
    uint64_t total = 0, passing = 0;
    const bool weighted = how.temperature != 0.0f;  // as the host: anything but 0 draws
    for (int64_t i = threadIdx.x; i < n; i += kThreads) {
        z += static_cast<double>(expf(l[i] - m));
        if (weighted) {
            const uint64_t w = weight_of(l[i], m, how.temperature);
            total += w;
            passing += sampling::passes_min_p(w, how.min_p);
        }
    }
    z = block_sum(z, sh.d);
    const float log_z = m + static_cast<float>(log(z));
    const Row r{l, n, m, weighted ? how.temperature : 1.0f, weighted};

    int32_t token = static_cast<int32_t>(at);
    if (weighted) {
        total = block_sum<unsigned long long>(total, sh.u);
        passing = block_sum<unsigned long long>(passing, sh.u);
        const int64_t n_k = how.top_k > 0 && how.top_k < n ? how.top_k : n;
        const uint64_t s = n_k == n ? total : prefix_weight(r, n_k, sh);
        // the kept prefix and its weight (a top-p cut knows its own; a min-p cut needs a select)
        int64_t cut = n_k;
        uint64_t mass = s;
        if (how.top_p < 1.0f) {
            const AtWeight a = at_weight(r, sampling::top_p_target(how.top_p, s) - 1, sh);
            const int64_t kept = static_cast<int64_t>(a.f.count_above) + a.j + 1;
            if (kept < cut) {
                cut = kept;
                mass = a.through();
            }
        }
        if (how.min_p > 0.0f) {
            const int64_t kept = passing > 0 ? static_cast<int64_t>(passing) : 1;
            if (kept < cut) {
                cut = kept;
                mass = prefix_weight(r, cut, sh);
            }
        }
        const AtWeight a = at_weight(r, sampling::draw_target(how.u, mass), sh);
        token = nth_tie(r, a.f.key, a.j, sh);
        if (token < 0) {  // a select lands on a key some token holds: a bug, said loudly
            if (threadIdx.x == 0) {
                *out = SampledRow{};
                out->status = SampledRow::lost_token;
            }
            return;
        }
    }

    // the top alternatives: the tokens before the n_top-th position's key, then its first ties
    int n_top = how.top_logprobs < kMaxTopLogprobs ? how.top_logprobs : kMaxTopLogprobs;
    if (n_top > n) n_top = static_cast<int>(n);
    if (n_top > 0) {
        const Row counted{l, n, m, 1.0f, false};
        const Found f = select(counted, false, static_cast<uint64_t>(n_top - 1), sh);
        if (threadIdx.x == 0) sh.n_list = 0;
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += kThreads) {
            const uint32_t k = key_of(l[i]);
            if (k > f.key) {
                const int slot = atomicAdd(&sh.n_list, 1);
                sh.list_key[slot] = k;
                sh.list_token[slot] = static_cast<int32_t>(i);
            }
        }
        __syncthreads();
        for (uint32_t j = 0; j < static_cast<uint32_t>(n_top) - f.count_above; ++j) {
            const int32_t t = nth_tie(counted, f.key, j, sh);
            if (threadIdx.x == 0) {
                sh.list_key[sh.n_list] = f.key;
                sh.list_token[sh.n_list++] = t;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            // insertion sort of at most 20: key descending, token ascending
            for (int a = 1; a < sh.n_list; ++a) {
                const uint32_t k = sh.list_key[a];
                const int32_t t = sh.list_token[a];
                int b = a - 1;
                while (b >= 0 && (sh.list_key[b] < k || (sh.list_key[b] == k && sh.list_token[b] > t))) {
                    sh.list_key[b + 1] = sh.list_key[b];
                    sh.list_token[b + 1] = sh.list_token[b];
                    --b;
                }
                sh.list_key[b + 1] = k;
                sh.list_token[b + 1] = t;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        *out = SampledRow{};
        out->token = token;
        out->logprob = l[token] - log_z;
        out->n_top = n_top;
        for (int i = 0; i < n_top; ++i) {
            out->top_token[i] = sh.list_token[i];
            out->top_logprob[i] = l[sh.list_token[i]] - log_z;
        }
    }
}

}  // namespace

bool sample_supported(const SampleParams& p) { return p.rows >= 0 && p.cols > 0 && p.cols < (int64_t{1} << 24); }

void invoke_sample(const SampleParams& p, cudaStream_t stream) {
    if (p.rows == 0) return;
    launch_kernel(sample_kernel, static_cast<unsigned>(p.rows), kThreads, 0, stream, p);
    TPS_CHECK_LAUNCH("sample");
}

}  // namespace tps::cuda
