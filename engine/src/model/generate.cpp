#include "tpserve/engine/generate.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <chrono>

namespace tps {

StopMatcher::StopMatcher(std::vector<std::string> stops, bool include) : stops_(std::move(stops)), include_(include) {
    stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
    for (const auto& s : stops_) hold_ = std::max(hold_, s.size() - 1);
}

std::string StopMatcher::push(std::string_view text) {
    if (done_) return {};
    pending_ += text;
    size_t cut = std::string::npos, met = 0;  // where the first stop string starts, and its length
    const std::string* first = nullptr;
    for (const auto& s : stops_) {
        const size_t at = pending_.find(s);
        if (at < cut || (at == cut && at != std::string::npos && s.size() > met)) cut = at, met = s.size(), first = &s;
    }
    if (cut != std::string::npos) {
        done_ = true;
        met_ = *first;
        std::string out = pending_.substr(0, include_ ? cut + met : cut);
        pending_.clear();
        return out;
    }
    if (pending_.size() <= hold_) return {};
    // keep the last hold_ bytes (a stop string may be starting), but never split a UTF-8 character
    size_t keep_from = pending_.size() - hold_;
    while (keep_from > 0 && (static_cast<unsigned char>(pending_[keep_from]) & 0xC0) == 0x80) --keep_from;
    std::string out = pending_.substr(0, keep_from);
    pending_.erase(0, keep_from);
    return out;
}

std::string StopMatcher::finish() {
    std::string out = done_ ? std::string() : pending_;
    pending_.clear();
    return out;
}

StepOutputKind output_kind_for(const SamplingParams& p, bool backend_samples) noexcept {
    if (p.constraint) return StepOutputKind::logits;  // the mask is applied on the host
    const bool plain_greedy = p.temperature == 0.0f && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
                              p.frequency_penalty == 0.0f && p.top_logprobs == 0 && p.logit_bias.empty() &&
                              (p.min_tokens == 0 || p.hold.empty()) && p.thinking_budget < 0;
    if (plain_greedy) return StepOutputKind::greedy;
    return backend_samples ? StepOutputKind::sample : StepOutputKind::logits;
}

void ask_for(SequenceStep& e, StepOutputKind kind, Sampler& sampler) {
    e.output = kind;
    if (kind == StepOutputKind::sample) e.sampling = sampler.prepare(e.penalties);
}

Sampled take_token(const StepOutput::Entry& e, StepOutputKind kind, Sampler& sampler) {
    if (kind == StepOutputKind::logits) return sampler.sample(e.logits);
    Sampled out;
    if (kind == StepOutputKind::greedy) {
        out.token = e.tokens.at(0);
        out.logprob = e.logprobs.at(0);
    } else {
        out = e.samples.at(0);
    }
    sampler.accept(out.token);
    return out;
}

GenerateResult generate(LlamaModel& model, const Tokenizer& tok, std::span<const int32_t> prompt,
                        const GenerateOptions& opt, const std::function<void(std::string_view)>& on_text) {
    Driver driver(model, nullptr, nullptr);
    return generate(driver, tok, prompt, opt, on_text);
}

GenerateResult generate(Driver& driver, const Tokenizer& tok, std::span<const int32_t> prompt,
                        const GenerateOptions& opt, const std::function<void(std::string_view)>& on_text) {
    using clock = std::chrono::steady_clock;
    LlamaModel& model = driver.model();
    TPS_CHECK_AS(UsageError, !prompt.empty(), "the prompt is empty");
    TPS_CHECK_AS(UsageError, opt.max_tokens >= 1, "max tokens must be at least 1, got {}", opt.max_tokens);
    const int64_t context = model.context_tokens();
    const int64_t room = context - static_cast<int64_t>(prompt.size());
    TPS_CHECK_AS(UsageError, room >= 1, "the prompt has {} tokens; the context holds {}", prompt.size(), context);
    TPS_CHECK_AS(UsageError, model.length(opt.seq_id) == 0, "sequence {} is already in use", opt.seq_id);
    GenerateResult r;
    r.prompt_tokens = static_cast<int64_t>(prompt.size());
    Sampler sampler(opt.sampling, prompt);
    const StepOutputKind kind = output_kind_for(opt.sampling, model.samples_rows());
    StreamDecoder decoder(tok);
    StopMatcher stops(opt.stop);
    const int64_t seq = opt.seq_id;
    struct Release {
        Driver& d;
        int64_t id;
        ~Release() { d.release(id); }
    } release{driver, seq};
    // the next token from a step's output
    auto pick = [&](const StepOutput& out) { return take_token(out.entries.at(0), kind, sampler).token; };

    // prefill in chunks of the model's step size; only the last chunk asks for an output
    const auto t0 = clock::now();
    const int64_t chunk = model.options().max_step_tokens;
    int32_t token = 0;
    for (int64_t pos = 0; pos < r.prompt_tokens; pos += chunk) {
        const int64_t n = std::min(chunk, r.prompt_tokens - pos);
        const bool last = pos + n == r.prompt_tokens;
        SequenceStep s{seq, std::vector<int32_t>(prompt.begin() + pos, prompt.begin() + pos + n), pos, false};
        ask_for(s, last ? kind : StepOutputKind::none, sampler);
        const StepOutput out = driver.run({std::move(s)});
        if (last) token = pick(out);
    }
    const auto t1 = clock::now();
    r.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

    const int64_t limit = std::min(opt.max_tokens, room);
    r.finish_reason = "length";
    while (true) {
        if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), token) != opt.stop_ids.end()) {
            r.finish_reason = "stop";
            break;
        }
        r.tokens.push_back(token);
        ++r.generated_tokens;
        if (const std::string text = stops.push(decoder.push(token)); !text.empty()) on_text(text);
        if (stops.done() || sampler.finished()) {  // a stop string, or the output's format is complete
            r.finish_reason = "stop";
            break;
        }
        if (r.generated_tokens >= limit) break;
        SequenceStep s{seq, {token}, r.prompt_tokens + r.generated_tokens - 1, false};
        ask_for(s, kind, sampler);
        token = pick(driver.run({std::move(s)}));
    }
    if (!stops.done()) {
        // in this order: what the decoder held back may still complete a stop string
        std::string rest = stops.push(decoder.finish());
        rest += stops.finish();
        if (!rest.empty()) on_text(rest);
    }
    r.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return r;
}

}  // namespace tps
