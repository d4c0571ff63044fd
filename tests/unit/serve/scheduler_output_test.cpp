// What a step's output does to a sequence, on the smollm2 fixture: echo's prompt scores, min_tokens,
// output formats (a grammar ends or fails its own request), and stop strings.
#include "scheduler_test_support.h"

#include "tpserve/engine/structured/formats.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tps::serve {
namespace {

using namespace std::chrono_literals;
using namespace test;

// echo: the prompt's text comes first; with logprobs every prompt token after the first gets the
// log-probability the model's logits at the position before give it (the engine's own rows,
// log-softmax here), and the generated part is what it is without echo. Scoring goes on where it
// stopped after a preemption. vLLM's prompt_logprobs are the same scores, with each token's rank,
// with or without echo.
TEST(Scheduler, EchoScoresThePromptWithTheModelsOwnLogits) {
    std::vector<int32_t> prompt = with_system(5);
    for (int k = 0; k < 20; ++k) prompt.push_back(static_cast<int32_t>(4 + (k * 23) % 590));
    const auto n = static_cast<int64_t>(prompt.size());
    std::vector<double> want(static_cast<size_t>(n), std::nan(""));
    std::vector<int64_t> rank(static_cast<size_t>(n), 0);  // tokens with a logit at least the prompt token's
    std::vector<int32_t> best(static_cast<size_t>(n), -1);
    {
        EngineUnderTest e(SchedulerOptions{}, 4096, 512);  // not started: the model is used directly
        SequenceStep all{1, prompt, 0, true, StepOutputKind::logits};
        const StepResult r = e.model.forward({all});
        for (int64_t i = 1; i < n; ++i) {
            const float* row = r.row(0, i - 1);
            const double mx = *std::max_element(row, row + r.vocab);
            double z = 0;
            for (int64_t v = 0; v < r.vocab; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
            want[static_cast<size_t>(i)] = row[prompt[static_cast<size_t>(i)]] - mx - std::log(z);
            rank[static_cast<size_t>(i)] = std::count_if(row, row + r.vocab, [&](float x) { return x >= row[prompt[static_cast<size_t>(i)]]; });
            best[static_cast<size_t>(i)] = static_cast<int32_t>(std::max_element(row, row + r.vocab) - row);
        }
        e.model.release(1);
    }
    const std::string prompt_text = test::fixture().tokenizer->decode(prompt, true);
    auto asking = [&](bool echo, int logprobs, int64_t max_tokens, int prompt_logprobs = -1) {
        auto j = job(prompt, max_tokens);
        GenerationRequest r = j->request();
        r.echo = echo;
        r.logprobs = logprobs;
        r.prompt_logprobs = prompt_logprobs;
        r.sampling.top_logprobs = std::max(0, logprobs);
        return std::make_shared<Job>(std::move(r));
    };
    auto check_scores = [&](const Outcome& o, const char* what) {
        ASSERT_GE(o.tokens.size(), static_cast<size_t>(n)) << what;
        EXPECT_EQ(std::vector<int32_t>(o.tokens.begin(), o.tokens.begin() + n), prompt) << what;
        EXPECT_TRUE(std::isnan(o.logprobs[0])) << what;
        for (int64_t i = 1; i < n; ++i) EXPECT_NEAR(o.logprobs[static_cast<size_t>(i)], want[static_cast<size_t>(i)], 1e-4) << what << " " << i;
        EXPECT_EQ(o.pieces.at(0), prompt_text) << what;
    };
    for (const int64_t kv : {int64_t{4096}, int64_t{96}}) {  // 96: six blocks, so sequences are preempted
        SchedulerOptions so;
        so.max_batch = 4;
        so.prefix_cache = kv > 96;
        so.micro_batches = kv > 96 ? 1 : 2;  // two steps in flight: more grow at once
        EngineUnderTest e(so, kv, 16);  // 16-token steps: the prompt is scored in several chunks
        e.start();
        const auto plain = run_all(e, {asking(false, 0, 6)}).at(0);
        const auto jobs = std::vector<std::shared_ptr<Job>>{asking(true, 2, 0), asking(true, 2, 6), asking(true, -1, 6),
                                                            asking(true, 2, 0), asking(false, -1, 6, 3), asking(true, 1, 6, 4)};
        const auto got = run_together(e, jobs);
        if (kv == 96) {
            EXPECT_GT(e.metrics.preemptions.value(), 0);
        }
        check_scores(got[0], "max_tokens 0");
        EXPECT_EQ(got[0].tokens.size(), static_cast<size_t>(n));
        EXPECT_EQ(got[0].text, prompt_text);
        EXPECT_EQ(got[0].finish_reason, "length");
        EXPECT_EQ(jobs[0]->completion_tokens.load(), 0);
        EXPECT_EQ(jobs[0]->prompt_tokens.load(), n);
        check_scores(got[1], "max_tokens 6");
        EXPECT_EQ(std::vector<int32_t>(got[1].tokens.begin() + n, got[1].tokens.end()), plain.tokens);
        EXPECT_EQ(got[1].text, prompt_text + plain.text);
        EXPECT_EQ(got[2].pieces.at(0), prompt_text);  // echo without logprobs: the text only
        EXPECT_EQ(got[2].text, prompt_text + plain.text);
        check_scores(got[3], "max_tokens 0, beside the others");
        // prompt_logprobs: the same scores, with ranks and their own number of alternatives
        auto check_prompt_logprobs = [&](const Outcome& o, size_t top, const char* what) {
            ASSERT_EQ(o.prompt_scores.size(), static_cast<size_t>(n)) << what;
            EXPECT_TRUE(std::isnan(o.prompt_scores[0].logprob)) << what;
            for (int64_t i = 1; i < n; ++i) {
                const TokenOut& t = o.prompt_scores[static_cast<size_t>(i)];
                EXPECT_EQ(t.token, prompt[static_cast<size_t>(i)]) << what << " " << i;
                EXPECT_NEAR(t.logprob, want[static_cast<size_t>(i)], 1e-4) << what << " " << i;
                EXPECT_EQ(t.rank, rank[static_cast<size_t>(i)]) << what << " " << i;
                ASSERT_EQ(t.top.size(), top) << what << " " << i;
                EXPECT_EQ(t.top[0].token, best[static_cast<size_t>(i)]) << what << " " << i;
            }
        };
        check_prompt_logprobs(got[4], 3, "prompt_logprobs 3");
        EXPECT_EQ(got[4].pieces.at(0), "");  // no echo: no prompt text
        EXPECT_EQ(got[4].text, plain.text);
        EXPECT_TRUE(got[4].tokens.empty());  // (no logprobs for the output)
        check_prompt_logprobs(got[5], 4, "prompt_logprobs 4 with echo and logprobs 1");
        check_scores(got[5], "echo beside prompt_logprobs");
        EXPECT_EQ(got[5].text, prompt_text + plain.text);
        for (int64_t i = 1; i < n; ++i) EXPECT_EQ(got[5].tops.at(static_cast<size_t>(i)), 1u) << i;  // echo's own one
        expect_cache_empty(e);
    }
}

// min_tokens: a stop token or stop string that would end the output at once is held back until
// that many tokens are out.
TEST(Scheduler, MinTokensHoldsTheStopsBack) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const Outcome free_run = run_all(e, {job(prompt_of(6), 8)}).at(0);
    ASSERT_GE(free_run.tokens.size(), 4u);
    int64_t counted = 0;  // the last run's usage.completion_tokens
    auto with = [&](int32_t min_tokens, bool by_string) {
        auto j = job(prompt_of(6), 8);
        GenerationRequest r = j->request();
        if (by_string) {
            r.stop = {free_run.text.substr(0, 1)};
        } else {
            r.stop_ids = {free_run.tokens[0]};
        }
        r.sampling.min_tokens = min_tokens;
        if (min_tokens > 0) r.sampling.hold = r.stop_ids;
        auto stopped = std::make_shared<Job>(std::move(r));
        Outcome o = run_all(e, {stopped}).at(0);
        counted = stopped->completion_tokens.load();
        return o;
    };
    const Outcome at_once = with(0, false);
    EXPECT_EQ(at_once.finish_reason, "stop");
    EXPECT_EQ(at_once.stop_token, free_run.tokens[0]);  // (a stop_token_ids token: vLLM's stop_reason names it)
    EXPECT_EQ(at_once.stop_string, "");
    EXPECT_EQ(at_once.text, "");
    EXPECT_EQ(at_once.tokens, std::vector<int32_t>{free_run.tokens[0]});  // the stop token's logprob, not its text
    EXPECT_EQ(counted, 1);  // the stop token was generated: usage counts it, as vLLM's
    const Outcome held = with(3, false);
    ASSERT_GE(held.tokens.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_NE(held.tokens[i], free_run.tokens[0]) << i;
    if (held.finish_reason == "stop") {
        EXPECT_EQ(counted, static_cast<int64_t>(held.tokens.size()));
    }
    // a stop string is not looked for in the first min_tokens - 1 tokens' text
    const Outcome by_string = with(0, true);
    EXPECT_EQ(by_string.text, "");
    EXPECT_EQ(by_string.stop_string, free_run.text.substr(0, 1));
    EXPECT_EQ(by_string.stop_token, -1);
    {
        // the model's own end is no stop_reason
        auto j = job(prompt_of(6), 8);
        GenerationRequest r = j->request();
        r.stop_ids = {free_run.tokens[0]};
        r.eos_ids = 1;
        const Outcome eos = run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
        EXPECT_EQ(eos.finish_reason, "stop");
        EXPECT_EQ(eos.stop_token, -1);
    }
    const Outcome late = with(2, true);
    EXPECT_EQ(late.tokens.at(0), free_run.tokens[0]);
    EXPECT_GE(late.tokens.size(), 2u);
}

// A constraint whose tokens run out after `allow` steps: it allows only token `only`, then
// nothing (the vocabulary "cannot spell" what comes next).
class RunsOut final : public TokenConstraint {
public:
    RunsOut(int32_t only, int allow) : only_(only), allow_(allow) {}
    std::unique_ptr<TokenConstraint> restart() const override { return std::make_unique<RunsOut>(only_, allow_); }
    const std::vector<uint64_t>& allowed() override {
        if (taken_ >= allow_) throw ConstraintError("nothing can follow");
        mask_.assign(16, 0);
        mask_[static_cast<size_t>(only_) / 64] |= uint64_t{1} << (only_ % 64);
        return mask_;
    }
    void accept(int32_t token) override {
        if (token != only_) throw ConstraintError("not allowed");
        ++taken_;
    }
    bool finished() const override { return false; }

private:
    int32_t only_;
    int allow_, taken_ = 0;
    std::vector<uint64_t> mask_;
};

// A request with an output format ends where the format is complete ("stop", no stop token), and
// one whose format cannot go on fails alone: the request beside it finishes as if alone.
TEST(Scheduler, OutputFormatsEndOrFailTheirOwnRequestOnly) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const ModelFiles& f = test::fixture();
    const auto vocab = std::make_shared<const structured::TokenBytes>(*f.tokenizer);
    auto choice = job(prompt_of(3), 50, 0.9f, 5);
    GenerationRequest r = choice->request();
    auto tokens = std::make_shared<structured::GrammarTokens>(structured::choice_grammar(std::vector<std::string>{"ab", "ba"}),
                                                              vocab, r.stop_ids);
    r.sampling.constraint = structured::make_grammar_constraint(tokens);
    const Outcome chosen = run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
    EXPECT_TRUE(chosen.text == "ab" || chosen.text == "ba") << chosen.text;
    EXPECT_EQ(chosen.finish_reason, "stop");

    const Outcome alone = run_all(e, {job(prompt_of(4), 10)}).at(0);
    auto doomed = job(prompt_of(5), 10);
    GenerationRequest d = doomed->request();
    int32_t a = -1;
    for (const auto& entry : vocab->sorted()) {
        if (vocab->text(entry) == "a") a = entry.token;
    }
    ASSERT_GE(a, 0);
    d.sampling.constraint = std::make_shared<RunsOut>(a, 3);
    const auto both = run_all(e, {std::make_shared<Job>(std::move(d)), job(prompt_of(4), 10)});
    EXPECT_EQ(both[0].error_status, 500);
    EXPECT_LE(both[0].tokens.size(), 3u);
    for (const int32_t t : both[0].tokens) EXPECT_EQ(t, a);
    EXPECT_EQ(both[1].text, alone.text);
    EXPECT_EQ(both[1].finish_reason, alone.finish_reason);
    EXPECT_EQ(e.metrics.failed.value(), 1);
    expect_cache_empty(e);
}

// A stop string ends the output right before it: every byte of text before it is sent, none after.
TEST(Scheduler, AStopStringEndsTheTextRightBeforeIt) {
    SchedulerOptions so;
    EngineUnderTest e(so);
    e.start();
    const Outcome whole = run_all(e, {job(prompt_of(5), 40)}).at(0);
    ASSERT_GE(whole.text.size(), 12u) << "the fixture's output is too short to cut";
    // a stop string from the middle, starting on a character boundary
    size_t at = whole.text.size() / 2;
    while (at > 0 && (static_cast<unsigned char>(whole.text[at]) & 0xC0) == 0x80) --at;
    const std::string stop = whole.text.substr(at, 3);
    const size_t first = whole.text.find(stop);
    auto j = job(prompt_of(5), 40);
    GenerationRequest r = j->request();
    r.stop = {stop};
    const Outcome cut = run_all(e, {std::make_shared<Job>(std::move(r))}).at(0);
    EXPECT_EQ(cut.text, whole.text.substr(0, first)) << "stop '" << stop << "'";
    EXPECT_EQ(cut.finish_reason, "stop");
}

}  // namespace
}  // namespace tps::serve
