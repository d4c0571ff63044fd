// One accepted generation request, shared by its HTTP session (an Asio thread) and the engine
// loop: the engine pushes pieces of output, the session takes them when notified and writes
// them. The session marks the job cancelled when its client goes away; the engine frees the
// sequence at its next step. This is the only state the two sides share.
#pragma once

#include "tpserve/engine/sampler.h"
#include "tpserve/serve/api_error.h"
#include "tpserve/serve/request.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tps::serve {

using Clock = std::chrono::steady_clock;

struct TokenOut {
    int32_t token = 0;
    float logprob = 0;
    std::vector<TokenLogprob> top;  // when asked for
    int64_t rank = 0;               // a scored prompt token's (1: the most likely; 0: not known)
};

// A piece of output: text that is final, the tokens it came from, and at the end the reason.
struct Delta {
    std::string text;
    std::vector<TokenOut> tokens;
    // prompt_logprobs: every prompt token's score (the first's NaN), in the piece before any output
    std::vector<TokenOut> prompt_logprobs;
    std::string finish_reason;        // "stop" / "length" on the last piece, else empty
    std::string stop_string;          // with "stop": the stop string that ended it (empty: a stop token, a format's end)
    int32_t stop_token = -1;          // with "stop": a stop_token_ids token (not the model's end) that ended it
    // the choice's prompt tokens and its output tokens so far, this piece's included (usage in
    // every chunk: stream_options.continuous_usage_stats)
    int64_t prompt_tokens = 0, completion_tokens = 0;
    std::optional<ApiError> error;    // the request failed (timeout, engine failure, shutdown)
    bool last() const noexcept { return !finish_reason.empty() || error.has_value(); }
    static Delta failure(ApiError e) {
        Delta d;
        d.error = std::move(e);
        return d;
    }
};

class Job {
public:
    explicit Job(GenerationRequest request) : request_(std::move(request)), arrived_(Clock::now()) {}

    const GenerationRequest& request() const noexcept { return request_; }
    Clock::time_point arrived() const noexcept { return arrived_; }

    // Engine side: adds a piece and wakes the session.
    void push(Delta d) {
        std::function<void()> wake;
        {
            std::lock_guard lock(mu_);
            if (d.last()) finished_ = true;
            pieces_.push_back(std::move(d));
            wake = notify_;
        }
        if (wake) wake();
    }
    // Session side: what has arrived since the last call.
    std::vector<Delta> take() {
        std::lock_guard lock(mu_);
        std::vector<Delta> out;
        out.swap(pieces_);
        return out;
    }
    // Called (from the engine thread) whenever a piece arrives; set before submitting.
    void set_notify(std::function<void()> f) {
        std::lock_guard lock(mu_);
        notify_ = std::move(f);
    }
    bool finished() const {
        std::lock_guard lock(mu_);
        return finished_;
    }

    void cancel() noexcept { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const noexcept { return cancelled_.load(std::memory_order_relaxed); }

    // Set by the engine before the last piece is pushed.
    std::atomic<int64_t> prompt_tokens{0};
    std::atomic<int64_t> completion_tokens{0};
    std::atomic<int64_t> cached_tokens{0};  // prompt tokens whose KV came from the prefix cache

private:
    GenerationRequest request_;
    Clock::time_point arrived_;
    mutable std::mutex mu_;
    std::vector<Delta> pieces_;
    std::function<void()> notify_;
    bool finished_ = false;
    std::atomic<bool> cancelled_{false};
};

}  // namespace tps::serve
