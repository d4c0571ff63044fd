// What a step's output does to its sequences (scheduler.h): a token sampled and emitted, stop
// tokens, stop strings and output formats ending it, prompt scores for echo, and the last piece.
#include "tpserve/serve/scheduler.h"

#include "scheduler_seq.h"
#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace tps::serve {

void Scheduler::process(const StepOutput& out, const std::vector<Seq*>& members) {
    TPS_CHECK(out.entries.size() == members.size(), "scheduler: step {} returned {} entries for {} sequences", out.id,
              out.entries.size(), members.size());
    for (size_t e = 0; e < members.size(); ++e) {
        Seq& s = *members[e];
        s.in_flight = false;
        const auto& entry = out.entries[e];
        // prompt tokens are counted once prefilled (not again after a preemption)
        if (s.fed >= std::min(s.prompt_len, s.feed_end())) count_prompt(s);
        const int64_t scored_from = std::exchange(s.scoring_from, -1);
        if (entry.rows == 0) continue;  // a prompt chunk that was not the last
        if (s.job->cancelled()) continue;  // swept before the next step
        if (scored_from >= 0) {
            score(s, entry, scored_from, out.vocab);
            continue;
        }
        try {
            emit(s, take_token(entry, s.kind, s.sampler));
        } catch (const ConstraintError& error) {
            // this request's output format cannot go on; the others can
            fail(s, ApiError(500, "server_error", error.what()), "failed");
        }
    }
}

void Scheduler::count_prompt(Seq& s) {
    if (s.prompt_counted) return;
    s.prompt_counted = true;
    s.job->prompt_tokens = s.prompt_len;
    m_.prompt_tokens.inc(static_cast<double>(s.prompt_len));
}

// A scored chunk's rows: row r (position from + r) gives the log-probability of the prompt token
// after it.
void Scheduler::score(Seq& s, const StepOutput::Entry& entry, int64_t from, int64_t vocab) {
    TPS_CHECK(static_cast<int64_t>(entry.logits.size()) == entry.rows * vocab && from == s.scored &&
                  from + entry.rows <= s.prompt_len - 1,
              "scheduler: sequence {} scored {} rows from position {} ({} scored of {})", s.id, entry.rows, from, s.scored,
              s.prompt_len);
    const int top = s.job->request().score_top();
    for (int64_t r = 0; r < entry.rows; ++r) {
        const int32_t token = s.tokens[static_cast<size_t>(from + r + 1)];
        const std::span<const float> row(entry.logits.data() + r * vocab, static_cast<size_t>(vocab));
        Sampled sc = score_token(row, token, top, scratch_);
        s.scores.push_back(TokenOut{token, sc.logprob, std::move(sc.top), sc.rank});
        ++s.scored;
    }
    if (s.scoring_done()) prompt_done(s);
}

// The prompt is ready to show (scored, if asked): echo sends its piece; with max_tokens 0 that
// was all.
void Scheduler::prompt_done(Seq& s) {
    const GenerationRequest& req = s.job->request();
    if ((req.echo || req.prompt_logprobs >= 0) && !s.echoed) {
        s.echoed = true;
        Delta d;
        if (req.echo) {
            d.text = tok_.decode(std::span<const int32_t>(s.tokens.data(), static_cast<size_t>(s.prompt_len)), req.skip_special_tokens);
        }
        // each asker's alternatives: the scores have the more of the two
        auto cut = [](std::vector<TokenOut> scores, int top) {
            for (auto& t : scores) t.top.resize(std::min(t.top.size(), static_cast<size_t>(top)));
            return scores;
        };
        if (req.echo && req.logprobs >= 0) d.tokens = cut(s.scores, req.logprobs);
        if (req.prompt_logprobs >= 0) d.prompt_logprobs = cut(s.scores, req.prompt_logprobs);
        s.scores.clear();
        d.prompt_tokens = s.prompt_len;
        s.job->push(std::move(d));
    }
    if (req.max_tokens == 0) finish(s, "length");
}

void Scheduler::emit(Seq& s, const Sampled& sampled) {
    const auto now = Clock::now();
    if (s.generated == 0) m_.time_to_first_token.observe(seconds(now - s.job->arrived()));
    else m_.inter_token_latency.observe(seconds(now - s.last_token));
    s.last_token = now;
    const auto& req = s.job->request();
    // (min_tokens: the sampler holds the stop tokens back until then)
    if (const auto stop = std::find(req.stop_ids.begin(), req.stop_ids.end(), sampled.token);
        s.generated >= req.sampling.min_tokens && stop != req.stop_ids.end()) {
        if (static_cast<size_t>(stop - req.stop_ids.begin()) >= req.eos_ids) s.stop_token = sampled.token;
        // the stop token is not text, but it was generated: its log-probability is reported (as
        // OpenAI's and vLLM's: lm-evaluation-harness reads the last entry as the generated
        // token's) and usage counts it (as vLLM's completion_tokens)
        if (req.logprobs >= 0) s.held.push_back(TokenOut{sampled.token, sampled.logprob, sampled.top});
        ++s.generated;
        m_.generation_tokens.inc();
        finish(s, "stop");
        return;
    }
    s.tokens.push_back(sampled.token);
    ++s.generated;
    m_.generation_tokens.inc();
    if (req.logprobs >= 0) s.held.push_back(TokenOut{sampled.token, sampled.logprob, sampled.top});
    // stop strings are looked for from the min_tokens-th token on
    std::string text = s.decoder.push(sampled.token);
    if (s.generated >= req.sampling.min_tokens) text = s.stops.push(std::move(text));
    // a stop string ends it (the text before it is final, what follows is not shown), the output
    // format admitting nothing more does, or the limit
    const bool stop = s.stops.done() || s.sampler.finished();
    const bool length = !stop && (s.generated >= req.max_tokens || static_cast<int64_t>(s.tokens.size()) >= opt_.context);
    push_piece(s, std::move(text), stop || length);
    if (stop || length) finish(s, stop ? "stop" : "length");
}

// Sends the text now final with the tokens it came from; tokens whose text is still held back
// wait for it, unless this is the last piece before the finish.
void Scheduler::push_piece(Seq& s, std::string text, bool last) {
    if (text.empty() && (!last || s.held.empty())) return;
    Delta d;
    d.text = std::move(text);
    d.tokens = std::move(s.held);
    s.held.clear();
    d.prompt_tokens = s.prompt_len;
    d.completion_tokens = s.generated;
    s.job->push(std::move(d));
}

void Scheduler::finish(Seq& s, const std::string& reason) {
    Delta d;
    if (!s.stops.done()) {
        // in this order: what the decoder held back may still complete a stop string
        d.text = s.stops.push(s.decoder.finish());
        d.text += s.stops.finish();
    }
    d.tokens = std::move(s.held);
    s.held.clear();
    d.finish_reason = reason;
    if (s.stops.done()) d.stop_string = s.stops.met();
    d.stop_token = s.stop_token;
    d.prompt_tokens = s.prompt_len;
    d.completion_tokens = s.generated;
    s.job->completion_tokens = s.generated;
    count_prompt(s);
    // the books first: whoever the last piece wakes sees them done
    (reason == "stop" ? m_.finished_stop : m_.finished_length).inc();
    m_.request_latency.observe(seconds(Clock::now() - s.job->arrived()));
    remove(s);
    s.job->push(std::move(d));
}

void Scheduler::fail(Seq& s, const ApiError& error, const char* outcome) {
    s.job->completion_tokens = s.generated;
    s.job->prompt_tokens = s.prompt_len;
    if (std::string_view(outcome) == "timeout") m_.timed_out.inc();
    else m_.failed.inc();
    remove(s);
    s.job->push(Delta::failure(error));
}

}  // namespace tps::serve
