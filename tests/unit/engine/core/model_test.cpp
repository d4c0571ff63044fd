// The forward pass on a tiny random model made on the spot: a batched step equals the sequences
// run one at a time, a chunked prefill equals one prefill, decode continues a prefill exactly,
// and bad steps are refused without touching the cache. (The Hugging Face comparison is in
// hf_reference_test.cpp, on the committed fixtures.)
#include "safetensors_writer.h"

#include "tpserve/common/error.h"
#include "tpserve/engine/driver.h"
#include "tpserve/engine/llama.h"
#include "tpserve/engine/model_files.h"
#include "tpserve/partition/hf_config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>

namespace tps {
namespace {

namespace fs = std::filesystem;

// A 2-layer GQA model with Qwen2-style biases, hidden 32, 4 heads of 8, 2 KV heads, vocab 50.
struct TinyModel {
    fs::path dir;
    ModelDesc desc;
    TinyModel() {
        dir = fs::temp_directory_path() / (std::to_string(::getpid()) + "-tiny-model");
        fs::remove_all(dir);
        fs::create_directories(dir);
        const nlohmann::json config = {{"model_type", "qwen2"}, {"hidden_size", 32}, {"intermediate_size", 48},
                                       {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                                       {"vocab_size", 50}, {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6},
                                       {"rope_theta", 10000.0}, {"tie_word_embeddings", false}, {"torch_dtype", "float32"}};
        std::ofstream(dir / "config.json") << config.dump();
        desc = model_from_hf_config(config, "tiny", (dir / "config.json").string());
        test::SafetensorsWriter st;
        uint64_t seed = 1;
        auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale) {
            int64_t n = 1;
            for (auto d : shape) n *= d;
            st.add(name, shape, test::random_values(static_cast<size_t>(n), seed++, scale));
        };
        add("model.embed_tokens.weight", {50, 32}, 1.0f);
        add("lm_head.weight", {50, 32}, 0.2f);
        st.add("model.norm.weight", {32}, std::vector<float>(32, 1.0f));
        for (int l = 0; l < 2; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            st.add(p + "input_layernorm.weight", {32}, std::vector<float>(32, 1.0f));
            st.add(p + "post_attention_layernorm.weight", {32}, std::vector<float>(32, 1.0f));
            add(p + "self_attn.q_proj.weight", {32, 32}, 0.2f);
            add(p + "self_attn.k_proj.weight", {16, 32}, 0.2f);
            add(p + "self_attn.v_proj.weight", {16, 32}, 0.2f);
            add(p + "self_attn.q_proj.bias", {32}, 0.1f);
            add(p + "self_attn.k_proj.bias", {16}, 0.1f);
            add(p + "self_attn.v_proj.bias", {16}, 0.1f);
            add(p + "self_attn.o_proj.weight", {32, 32}, 0.2f);
            add(p + "mlp.gate_proj.weight", {48, 32}, 0.2f);
            add(p + "mlp.up_proj.weight", {48, 32}, 0.2f);
            add(p + "mlp.down_proj.weight", {32, 48}, 0.2f);
        }
        st.write(dir / "model.safetensors");
    }
    ~TinyModel() { fs::remove_all(dir); }

    std::unique_ptr<LlamaModel> load(Backend& be, ModelOptions opt = {}) const {
        const auto src = WeightSource::open(dir);
        return std::make_unique<LlamaModel>(desc, load_llama_weights(src, desc, {}), be, opt);
    }
};

const TinyModel& tiny() {
    static TinyModel m;
    return m;
}

void expect_close(const float* a, const float* b, int64_t n, float tol) {
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(a[i], b[i], tol * (1 + std::abs(b[i]))) << "at " << i;
}

// Batch invariance: what a token computes does not depend on what else is in its step or how its
// prompt was chunked, bit for bit (continuous batching must not change anyone's output).
void expect_same(const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], b[i]) << "at " << i;
}

TEST(LlamaModel, BatchedStepEqualsSequencesAlone) {
    auto be = make_cpu_backend(2);
    const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5, 6, 7}, {9, 8}, {40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 0, 1, 2, 3, 4, 5, 6, 7, 8}};
    std::vector<std::vector<float>> alone;
    for (const auto& p : prompts) {
        auto m = tiny().load(*be);
        const StepResult r = m->forward({{0, p, 0, true}});
        alone.emplace_back(r.logits.begin(), r.logits.end());
    }
    auto m = tiny().load(*be);
    std::vector<SequenceStep> step;
    for (size_t i = 0; i < prompts.size(); ++i) step.push_back({static_cast<int64_t>(i + 10), prompts[i], 0, true});
    const StepResult r = m->forward(step);
    for (size_t i = 0; i < prompts.size(); ++i) {
        ASSERT_EQ(r.rows[i], static_cast<int64_t>(prompts[i].size()));
        expect_same(r.row(static_cast<int64_t>(i)), alone[i].data(), r.rows[i] * r.vocab);
    }
}

// Greedy entries come back as picks (the backend's arg-max of each row), logits entries as rows,
// in one step; each equals what the logits of the same step say.
TEST(LlamaModel, GreedyEntriesGetTheBestTokenOfTheirLogits) {
    auto be = make_cpu_backend(2);
    std::vector<SequenceStep> step = {{1, {1, 2, 3}, 0, false, StepOutputKind::greedy},
                                      {2, {4, 5}, 0, false, StepOutputKind::logits},
                                      {3, {6, 7, 8, 9}, 0, false, StepOutputKind::none},
                                      {4, {10, 11, 12, 13}, 0, true, StepOutputKind::greedy}};
    auto m = tiny().load(*be);
    const StepResult r = m->forward(step);
    for (auto& e : step) e.output = StepOutputKind::logits;
    auto all = tiny().load(*be);
    const StepResult want = all->forward(step);
    ASSERT_EQ(r.picks.size(), 5u);
    ASSERT_EQ(r.logits.size(), static_cast<size_t>(r.vocab));
    EXPECT_EQ(r.rows, (std::vector<int64_t>{1, 1, 0, 4}));
    expect_same(r.row(1), want.row(1), r.vocab);
    for (int64_t e : {0, 3}) {
        for (int64_t i = 0; i < r.rows[static_cast<size_t>(e)]; ++i) {
            const float* row = want.row(e, i);
            const auto best = std::max_element(row, row + want.vocab) - row;
            double sum = 0;
            for (int64_t v = 0; v < want.vocab; ++v) sum += std::exp(static_cast<double>(row[v] - row[best]));
            EXPECT_EQ(r.pick(e, i).token, best) << "entry " << e << " row " << i;
            EXPECT_EQ(r.pick(e, i).max, row[best]);
            EXPECT_FLOAT_EQ(r.pick(e, i).sum_exp, static_cast<float>(sum));
        }
    }
}

// A model whose logits are NaN (here a NaN norm gain, as a broken checkpoint or an overflow gives)
// is an error when greedy picks a token from them, never a token picked from garbage.
TEST(LlamaModel, GreedyOnNanLogitsIsAnError) {
    auto be = make_cpu_backend(2);
    LlamaWeights w = load_llama_weights(WeightSource::open(tiny().dir), tiny().desc, {});
    w.final_norm.buf.as<float>()[3] = std::nanf("");
    LlamaModel m(tiny().desc, std::move(w), *be, {});
    try {
        (void)run_stage(m, nullptr, 1, {{1, {1, 2, 3}, 0, false, StepOutputKind::greedy}});
        ADD_FAILURE() << "a token was picked from NaN logits";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
    }
}

// Sampled entries come back as the token the backend drew, equal to sampling the same step's
// logits on the host with the same parameters and draw; greedy and logits entries beside them
// keep their places. Bad sampled entries are refused before anything runs.
TEST(LlamaModel, SampledEntriesEqualSamplingTheirLogits) {
    auto be = make_cpu_backend(2);
    RowSampling how;
    how.temperature = 0.8f;
    how.top_k = 30;
    how.top_p = 0.95f;
    how.top_logprobs = 2;
    std::vector<SequenceStep> step = {{1, {1, 2, 3}, 0, false, StepOutputKind::sample},
                                      {2, {4, 5}, 0, false, StepOutputKind::greedy},
                                      {3, {6, 7}, 0, false, StepOutputKind::logits},
                                      {4, {8, 9, 10}, 0, false, StepOutputKind::sample}};
    step[0].sampling = how;
    step[0].sampling.u = 0.25;
    step[0].penalties = {{3, 1.5f, 0.25f}, {17, 1.0f, -1.0f}};
    step[3].sampling = how;
    step[3].sampling.u = 0.8;
    auto m = tiny().load(*be);
    const StepResult r = m->forward(step);
    auto plain = step;
    for (auto& e : plain) e.output = StepOutputKind::logits;
    auto all = tiny().load(*be);
    const StepResult want = all->forward(plain);
    ASSERT_EQ(r.samples.size(), 2u);
    ASSERT_EQ(r.picks.size(), 1u);
    EXPECT_EQ(r.rows, (std::vector<int64_t>{1, 1, 1, 1}));
    expect_same(r.row(2), want.row(2), r.vocab);
    RowScratch scratch;
    for (int64_t e : {0, 3}) {
        RowSampling one = step[static_cast<size_t>(e)].sampling;
        one.penalties_count = static_cast<int32_t>(step[static_cast<size_t>(e)].penalties.size());
        const Sampled host = sample_row(std::span(want.row(e), static_cast<size_t>(want.vocab)), one,
                                        step[static_cast<size_t>(e)].penalties, scratch);
        EXPECT_EQ(r.sample(e).token, host.token) << "entry " << e;
        EXPECT_EQ(r.sample(e).logprob, host.logprob);
        ASSERT_EQ(r.sample(e).top.size(), 2u);
        EXPECT_EQ(r.sample(e).top[0].token, host.top[0].token);
    }

    auto refused = [&](auto mutate, const char* needle) {
        auto bad = plain;
        bad[0].output = StepOutputKind::sample;
        mutate(bad[0]);
        auto fresh = tiny().load(*be);
        try {
            fresh->forward(bad);
            ADD_FAILURE() << needle;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
        EXPECT_EQ(fresh->length(1), 0);
    };
    refused([](SequenceStep& e) { e.all_logits = true; }, "samples the last");
    refused([](SequenceStep& e) { e.sampling.top_p = 0; }, "out of range");
    refused([](SequenceStep& e) { e.sampling.u = 1.0; }, "out of range");
    refused([](SequenceStep& e) { e.penalties = {{3, 1.0f, 1.0f}, {3, 1.0f, 1.0f}}; }, "penalises token 3 twice");
    refused([](SequenceStep& e) { e.penalties = {{50, 1.0f, 1.0f}}; }, "outside the vocabulary");
}

TEST(LlamaModel, ChunkedPrefillAndDecodeEqualOnePass) {
    auto be = make_cpu_backend(2);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 37; ++i) tokens.push_back((i * 7) % 50);  // crosses two 16-token blocks
    auto whole = tiny().load(*be);
    const StepResult all = whole->forward({{1, tokens, 0, true}});
    auto parts = tiny().load(*be);
    int64_t pos = 0;
    for (int64_t chunk : {5, 16, 1, 1, 14}) {
        const std::vector<int32_t> piece(tokens.begin() + pos, tokens.begin() + pos + chunk);
        const StepResult r = parts->forward({{1, piece, pos, true}});
        expect_same(r.logits.data(), all.logits.data() + pos * all.vocab, chunk * all.vocab);
        pos += chunk;
    }
    EXPECT_EQ(parts->length(1), 37);
}

TEST(LlamaModel, MixedPrefillAndDecodeInOneStep) {
    auto be = make_cpu_backend(1);
    auto m = tiny().load(*be);
    m->forward({{1, {1, 2, 3}, 0, false}});
    const StepResult mixed = m->forward({{1, {4}, 3, false}, {2, {7, 7, 7, 7}, 0, false}});
    auto ref = tiny().load(*be);
    const StepResult one = ref->forward({{1, {1, 2, 3, 4}, 0, false}});
    const StepResult two = ref->forward({{2, {7, 7, 7, 7}, 0, false}});
    expect_same(mixed.row(0), one.row(0), mixed.vocab);
    expect_same(mixed.row(1), two.row(0), mixed.vocab);
}

TEST(LlamaModel, KvBlocksAreFreedAndCapacityIsEnforced) {
    auto be = make_cpu_backend(1);
    ModelOptions opt;
    opt.kv_tokens = 32;  // two blocks
    auto m = tiny().load(*be, opt);
    EXPECT_EQ(m->kv_capacity_tokens(), 32);
    m->forward({{1, std::vector<int32_t>(20, 3), 0, false}});
    EXPECT_EQ(m->kv_free_tokens(), 0);
    EXPECT_THROW(m->forward({{2, {1}, 0, false}}), KvCapacityError);
    EXPECT_EQ(m->length(2), 0);  // the refused step left nothing behind
    m->release(1);
    EXPECT_EQ(m->kv_free_tokens(), 32);
    EXPECT_NO_THROW(m->forward({{2, {1}, 0, false}}));
}

// A sequence started on another's cached prefix computes what it would alone, bit for bit, and
// the shared blocks are freed only when neither holds them.
TEST(LlamaModel, ASharedPrefixComputesWhatAFreshPrefillDoes) {
    auto be = make_cpu_backend(2);
    std::vector<int32_t> a, b;
    for (int i = 0; i < 40; ++i) a.push_back((i * 7) % 50);
    b.assign(a.begin(), a.begin() + 32);  // two whole blocks in common, then its own
    for (int i = 0; i < 9; ++i) b.push_back((i * 11 + 3) % 50);
    auto ref = tiny().load(*be);
    const StepResult alone = ref->forward({{1, b, 0, true}});

    ModelOptions opt;
    opt.kv_tokens = 80;  // five blocks
    auto m = tiny().load(*be, opt);
    m->forward({{1, a, 0, false}});  // three blocks
    EXPECT_EQ(m->kv_free_tokens(), 32);
    m->share_prefix(2, 1, 32);
    EXPECT_EQ(m->length(2), 32);
    EXPECT_EQ(m->kv_free_tokens(), 32);  // nothing taken
    const std::vector<int32_t> rest(b.begin() + 32, b.end());
    const StepResult shared = m->forward({{2, rest, 32, true}});
    expect_same(shared.row(0), alone.row(0, 32), 9 * shared.vocab);
    EXPECT_EQ(m->kv_free_tokens(), 16);  // its third block is its own
    m->release(1);
    EXPECT_EQ(m->kv_free_tokens(), 32);  // the source's third block only: the first two are still held
    const StepResult next = m->forward({{2, {5}, 41, false}});
    std::vector<int32_t> b_next = b;
    b_next.push_back(5);
    const StepResult ref_next = tiny().load(*be)->forward({{1, b_next, 0, false}});
    expect_same(next.row(0), ref_next.row(0), next.vocab);
    m->release(2);
    EXPECT_EQ(m->kv_free_tokens(), 80);

    // only whole blocks the source holds; a new sequence; an existing source
    m->forward({{3, a, 0, false}});
    EXPECT_THROW(m->share_prefix(4, 3, 24), UsageError);   // not a whole block
    EXPECT_THROW(m->share_prefix(4, 3, 48), UsageError);   // more than it holds
    EXPECT_THROW(m->share_prefix(4, 3, 0), UsageError);
    EXPECT_THROW(m->share_prefix(4, 9, 16), UsageError);   // no such sequence
    EXPECT_THROW(m->share_prefix(3, 3, 16), UsageError);   // exists
    EXPECT_EQ(m->length(4), 0);
    // a step that fails leaves the shared sequence and the source as they were
    m->share_prefix(4, 3, 32);
    EXPECT_THROW(m->forward({{4, std::vector<int32_t>(40, 1), 32, false}}), KvCapacityError);
    EXPECT_EQ(m->length(4), 32);
    EXPECT_EQ(m->kv_free_tokens(), 32);
    m->release(3);
    m->release(4);
    EXPECT_EQ(m->kv_free_tokens(), 80);
}

TEST(LlamaModel, BadStepsAreRefused) {
    auto be = make_cpu_backend(1);
    ModelOptions opt;
    opt.max_step_tokens = 8;
    auto m = tiny().load(*be, opt);
    EXPECT_THROW(m->forward({}), UsageError);
    EXPECT_THROW(m->forward({{1, {}, 0, false}}), UsageError);
    EXPECT_THROW(m->forward({{1, {50}, 0, false}}), UsageError);   // outside the vocabulary
    EXPECT_THROW(m->forward({{1, {-1}, 0, false}}), UsageError);
    EXPECT_THROW(m->forward({{1, {1}, 3, false}}), UsageError);    // skips positions
    EXPECT_THROW(m->forward({{1, std::vector<int32_t>(9, 1), 0, false}}), UsageError);  // over a step
    EXPECT_THROW(m->forward({{1, {1}, 0, false}, {1, {2}, 0, false}}), UsageError);  // twice
    EXPECT_EQ(m->length(1), 0);
}

TEST(LlamaModel, ReducedPrecisionKvStaysClose) {
    auto be = make_cpu_backend(1);
    const std::vector<int32_t> p = {5, 6, 7, 8, 9, 10, 11, 12, 13};
    const StepResult f32 = tiny().load(*be)->forward({{1, p, 0, false}});
    for (DType kv : {DType::f16, DType::bf16}) {
        ModelOptions opt;
        opt.kv_dtype = kv;
        const StepResult r = tiny().load(*be, opt)->forward({{1, p, 0, false}});
        expect_close(r.logits.data(), f32.logits.data(), r.vocab, kv == DType::f16 ? 2e-3f : 2e-2f);
    }
}

TEST(LlamaModel, LoadsOnlyItsShard) {
    // tp=2 rank 1: half of Q, one of two KV heads, half the FFN, half the vocabulary
    const auto src = WeightSource::open(tiny().dir);
    ShardSpec s;
    s.tp = 2;
    s.tp_rank = 1;
    const LlamaWeights w = load_llama_weights(src, tiny().desc, s);
    EXPECT_EQ(w.layers[0].wq.rows, 16);
    EXPECT_EQ(w.layers[0].wk.rows, 8);
    EXPECT_EQ(w.layers[0].wo.cols, 16);
    EXPECT_EQ(w.layers[0].w_down.cols, 24);
    EXPECT_EQ(w.embedding.rows, 25);
    EXPECT_EQ(w.embedding_first, 25);
    ShardSpec stage;
    stage.first_layer = 1;
    stage.first_stage = false;
    const LlamaWeights last = load_llama_weights(src, tiny().desc, stage);
    EXPECT_EQ(last.layers.size(), 1u);
    EXPECT_TRUE(last.embedding.empty());
    EXPECT_FALSE(last.lm_head.empty());
}

}  // namespace
}  // namespace tps

namespace tps {
namespace {

// A backend that fails on the n-th attention call, to see a step fail half way.
class FailingBackend final : public Backend {
public:
    explicit FailingBackend(Backend& inner) : in_(inner) {}
    int fail_at = -1;  // attention calls before the failure; -1: never
    bool on_device = false;  // says it keeps activations in device memory
    bool experts = false;    // says it computes MoE layers (without overriding their ops)
    bool legacy_formats_only = false;  // reads f32/f16/bf16/int8 and blocks of 32 only
    std::string_view name() const noexcept override { return "failing"; }
    bool computes_with(DType t) const noexcept override {
        return !legacy_formats_only || dtype_layout(t).block <= 32;  // (q5_0 and q5_1 pass: enough for the test)
    }
    std::string weight_formats() const override { return legacy_formats_only ? "the legacy ones" : Backend::weight_formats(); }
    bool device_memory() const noexcept override { return on_device; }
    bool computes_experts() const noexcept override { return experts; }
    std::unique_ptr<DeviceMemory> allocate(int64_t b, MemoryTag t) override { return in_.allocate(b, t); }
    void embedding(const Weight& w, int64_t f, std::span<const int32_t> i, Tensor o) override { in_.embedding(w, f, i, o); }
    void rmsnorm(const Tensor& x, const Vec& w, float e, Tensor o) override { in_.rmsnorm(x, w, e, o); }
    void matmul(const Weight& w, const Tensor& x, Tensor y, const Weight* n) override { in_.matmul(w, x, y, n); }
    void matmul_multi(const Tensor& x, std::span<const Product> p, const Weight* n) override { in_.matmul_multi(x, p, n); }
    void add_bias(Tensor y, const Vec& b) override { in_.add_bias(y, b); }
    void rope(Tensor x, int64_t d, const RopeTable& t, std::span<const int32_t> p) override { in_.rope(x, d, t, p); }
    void kv_store(DeviceMemory& kv, const KvLayout& L, int64_t l, const Tensor& k, const Tensor& v,
                  const StepLayout& s) override {
        in_.kv_store(kv, L, l, k, v, s);
    }
    void attention(const Tensor& q, const DeviceMemory& kv, const KvLayout& L, int64_t l, const StepLayout& s,
                   int64_t h, Tensor o) override {
        if (fail_at >= 0 && fail_at-- == 0) throw DeviceError("injected failure");
        in_.attention(q, kv, L, l, s, h, o);
    }
    void swiglu(const Tensor& g, const Tensor& u, Tensor o) override { in_.swiglu(g, u, o); }
    void add(Tensor x, const Tensor& y) override { in_.add(x, y); }
    void gather_rows(const Tensor& x, std::span<const int64_t> r, Tensor o) override { in_.gather_rows(x, r, o); }
    void to_host(const Tensor& x, float* h) override { in_.to_host(x, h); }
    void greedy_rows(const Tensor& l, int64_t f, GreedyPick* h) override { in_.greedy_rows(l, f, h); }
    void sample_rows(const Tensor& l, std::span<const RowSampling> r, std::span<const PenaltyEntry> p, SampledRow* h) override {
        sample_calls.emplace_back(r.size(), p.size());
        in_.sample_rows(l, r, p, h);
    }
    void reserve(const StepLimits& l) override {
        limits = l;
        in_.reserve(l);
    }
    std::vector<std::pair<size_t, size_t>> sample_calls;  // rows and penalty entries of each sample_rows
    StepLimits limits;                                    // the last reserve()

private:
    Backend& in_;
};

// The backend is told the most rows and penalty entries one sample_rows call brings (what the
// CUDA backend reserves and the planner counts: a vocabulary's entries); rows whose penalties
// together list more are drawn in several calls, each row as it would have been in one.
TEST(LlamaModel, SampledRowsWhosePenaltiesPassAVocabularyAreDrawnInSeveralCalls) {
    auto cpu = make_cpu_backend(2);
    FailingBackend be(*cpu);
    auto m = tiny().load(be);
    const int64_t vocab = tiny().desc.vocab;
    EXPECT_EQ(be.limits.sample_rows, m->options().max_logit_rows);
    EXPECT_EQ(be.limits.sample_penalties, vocab);

    // penalty lists of the whole vocabulary, 30 tokens, 30 and 5: a call each for the first two,
    // one for the last two (35 entries); a greedy entry among them keeps its place
    std::vector<SequenceStep> step;
    const int counts[] = {static_cast<int>(vocab), 30, -1, 30, 5};
    for (int e = 0; e < 5; ++e) {
        SequenceStep s{e + 1, {e + 1, e + 2}, 0, false, counts[e] < 0 ? StepOutputKind::greedy : StepOutputKind::sample};
        s.sampling.temperature = 0.9f;
        s.sampling.top_logprobs = 2;
        s.sampling.u = 0.1 + 0.2 * e;
        for (int t = 0; t < counts[e]; ++t) {
            s.penalties.push_back({(t * 7 + e) % static_cast<int32_t>(vocab), 1.0f + 0.01f * static_cast<float>(t), 0.1f * static_cast<float>(e)});
        }
        step.push_back(s);
    }
    const StepResult r = m->forward(step);
    EXPECT_EQ(be.sample_calls, (std::vector<std::pair<size_t, size_t>>{{1, static_cast<size_t>(vocab)}, {1, 30}, {2, 35}}));

    auto plain = step;
    for (auto& e : plain) e.output = StepOutputKind::logits;
    auto all = tiny().load(*cpu);
    const StepResult want = all->forward(plain);
    RowScratch scratch;
    for (int64_t e : {0, 1, 3, 4}) {
        const SequenceStep& s = step[static_cast<size_t>(e)];
        RowSampling one = s.sampling;
        one.penalties_count = static_cast<int32_t>(s.penalties.size());
        const Sampled host = sample_row(std::span(want.row(e), static_cast<size_t>(want.vocab)), one, s.penalties, scratch);
        EXPECT_EQ(r.sample(e).token, host.token) << "entry " << e;
        EXPECT_EQ(r.sample(e).logprob, host.logprob) << "entry " << e;
        ASSERT_EQ(r.sample(e).top.size(), 2u);
        EXPECT_EQ(r.sample(e).top[1].token, host.top[1].token) << "entry " << e;
    }
    EXPECT_EQ(r.picks.size(), 1u);
}

TEST(LlamaModel, AStepThatFailsHalfWayLeavesTheCacheAsItWas) {
    auto cpu = make_cpu_backend(1);
    FailingBackend be(*cpu);
    ModelOptions opt;
    opt.kv_tokens = 64;
    auto m = tiny().load(be, opt);
    const StepResult before = m->forward({{1, {1, 2, 3}, 0, false}});
    const int64_t free = m->kv_free_tokens();
    be.fail_at = 1;  // the second layer's attention
    EXPECT_THROW(m->forward({{1, std::vector<int32_t>(14, 4), 3, false}, {2, std::vector<int32_t>(20, 5), 0, false}}),
                 DeviceError);
    EXPECT_EQ(m->kv_free_tokens(), free);  // the blocks taken for the step went back
    EXPECT_EQ(m->length(1), 3);
    EXPECT_EQ(m->length(2), 0);
    // and the sequence carries on as if the failed step had never been tried
    const StepResult next = m->forward({{1, {4}, 3, false}});
    auto ref = tiny().load(*cpu, opt);
    const StepResult want = ref->forward({{1, {1, 2, 3, 4}, 0, false}});
    expect_close(next.logits.data(), want.logits.data(), want.vocab, 1e-5f);
}

// A backend that does not read a checkpoint's formats refuses it before the weights load, naming
// the tensors and what it does read (the CUDA backend and a K-quant GGUF).
TEST(LlamaModel, WeightFormatsABackendDoesNotReadAreRefusedBeforeLoading) {
    const ModelFiles files =
        ModelFiles::open(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/llama3-gguf-q4_k_m/llama3-wide-Q4_K_M.gguf");
    auto cpu = make_cpu_backend(1);
    EXPECT_NO_THROW(check_backend_computes(files.desc, *cpu));
    FailingBackend limited(*cpu);
    limited.legacy_formats_only = true;
    try {
        check_backend_computes(files.desc, limited);
        FAIL() << "a q4_k model was not refused";
    } catch (const UsageError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("formats the failing backend does not compute with"), std::string::npos) << m;
        EXPECT_NE(m.find("(q4_k)"), std::string::npos) << m;
        EXPECT_NE(m.find("and 13 more"), std::string::npos) << m;  // 16 matrices: embedding, LM head, 2 x 7
        EXPECT_NE(m.find("it reads the legacy ones"), std::string::npos) << m;
        EXPECT_NE(m.find("--backend cpu"), std::string::npos) << m;
    }
    // the llama3 fixtures' q8_0 GGUF is read by both
    const ModelFiles q8 =
        ModelFiles::open(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/llama3-gguf-q8_0/llama3-tiny-Q8_0.gguf");
    EXPECT_NO_THROW(check_backend_computes(q8.desc, limited));
}

TEST(LlamaModel, RandomWeightsRefuseShapesTheirFormatCannotHold) {
    ModelDesc d = tiny().desc;  // hidden 32: q8_0 blocks fit; make it 40
    d.hidden = 40;
    EXPECT_THROW(make_random_llama_weights(d, DType::q8_0, 1), UsageError);
}

// Mixtral computes on the CPU backend (hf_reference_test, sharded_test); where it cannot be
// computed it is refused at once, saying why.
TEST(LlamaModel, MixtureOfExpertsModelsWhereTheyCannotBeComputedAreRefusedSayingWhy) {
    const ModelFiles files = ModelFiles::open(std::string(TPS_SOURCE_DIR) + "/tests/fixtures/models/mixtral");
    ASSERT_EQ(files.desc.experts, 4);
    auto refused = [](const std::function<void()>& what, const std::string& words) {
        try {
            what();
            ADD_FAILURE() << "not refused: " << words;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
        }
    };
    auto cpu = make_cpu_backend(1);
    ModelOptions opt;
    opt.kv_tokens = 64;
    FailingBackend device(*cpu);  // a backend that says it has no expert layers
    device.on_device = true;
    refused([&] { LlamaModel m(files.desc, load_llama_weights(files.weights, files.desc, {}), device, opt); },
            "the failing backend does not compute expert layers yet");
    refused([&] { check_backend_computes(files.desc, device); }, "'mixtral' is a mixture-of-experts model");
    EXPECT_NO_THROW(check_backend_computes(files.desc, *cpu));
    FailingBackend plain(*cpu);  // nor one that claims them without the two ops, whose defaults refuse
    plain.experts = true;
    LlamaModel without(files.desc, load_llama_weights(files.weights, files.desc, {}), plain, opt);
    refused([&] { (void)without.forward({{1, {1, 2, 3}, 0, false}}); }, "does not compute mixture-of-experts layers");
    // random weights of an MoE shape (benchmarks): every expert made, and they run
    const LlamaWeights random = make_random_llama_weights(files.desc, DType::f32, 1);
    ASSERT_EQ(random.layers[0].experts.size(), 4u);
    EXPECT_EQ(random.layers[0].experts_per_token, 2);
    LlamaModel m(files.desc, make_random_llama_weights(files.desc, DType::f32, 1), *cpu, opt);
    const StepResult r = m.forward({{1, {1, 2, 3}, 0, false}});
    EXPECT_TRUE(std::all_of(r.logits.begin(), r.logits.end(), [](float v) { return std::isfinite(v); }));
}

}  // namespace
}  // namespace tps
