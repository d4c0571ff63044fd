// What the scheduler's files share (scheduler.cpp: admission, batching, the prefix cache;
// scheduler_output.cpp: what a step's output does to its sequences): one running request's state.
#pragma once

#include "tpserve/engine/generate.h"
#include "tpserve/serve/scheduler.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

namespace tps::serve {

// Prompt rows scored (echo with logprobs) in one step at most: each is a row of the whole
// vocabulary on rank 0 (128 KiB a row for a 32k vocabulary, 512 KiB for 128k).
inline constexpr int64_t kMaxScoredRows = 64;

inline double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// One running request: everything the engine knows of its sequence.
struct Scheduler::Seq {
    Seq(std::shared_ptr<Job> j, int64_t seq_id, const Tokenizer& tok, bool backend_samples)
        : job(std::move(j)),
          id(seq_id),
          tokens(job->request().prompt),
          prompt_len(static_cast<int64_t>(tokens.size())),
          kind(output_kind_for(job->request().sampling, backend_samples)),
          sampler(job->request().sampling, job->request().prompt),
          decoder(tok, job->request().skip_special_tokens),
          stops(job->request().stop, job->request().include_stop_str),
          scores_prompt(job->request().scores_prompt()) {
        if (scores_prompt) scores.push_back(TokenOut{tokens.at(0), std::nanf(""), {}});  // the first has none
        if (job->request().echo) decoder.follow(job->request().prompt);  // after the prompt's text: its spaces kept
    }

    std::shared_ptr<Job> job;
    int64_t id;
    std::vector<int32_t> tokens;  // the prompt, then every generated token
    int64_t prompt_len;
    int64_t fed = 0;              // tokens in the KV cache
    int64_t generated = 0;
    StepOutputKind kind;
    Sampler sampler;
    StreamDecoder decoder;
    StopMatcher stops;
    std::vector<TokenOut> held;   // tokens whose text is not out yet
    bool in_flight = false;
    bool done = false;
    bool prompt_counted = false;
    Clock::time_point last_token{};
    // echo with logprobs: the prompt's tokens 1.. are scored from the logits of the positions
    // before them (fed with every row's logits, apart from the last token, which is fed as usual
    // to give the first output). `scores`: the first `1 + scored` prompt tokens' entries.
    bool scores_prompt;
    int64_t scored = 0;
    std::vector<TokenOut> scores;
    int64_t scoring_from = -1;    // the in-flight entry is a scored chunk from this position
    int32_t stop_token = -1;      // a stop_token_ids token ended it (vLLM's stop_reason)
    bool echoed = false;          // the prompt's piece is out

    bool scoring_done() const noexcept { return !scores_prompt || scored == prompt_len - 1; }
    // where feeding stops: with max_tokens 0 after the scored part of the prompt (nothing is
    // generated), else never
    int64_t feed_end() const noexcept {
        if (job->request().max_tokens > 0) return static_cast<int64_t>(tokens.size());
        return scores_prompt ? prompt_len - 1 : 0;
    }
    int64_t todo() const noexcept { return feed_end() - fed; }
};

}  // namespace tps::serve
