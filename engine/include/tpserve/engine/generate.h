// Generating one sequence to completion: prefill in chunks, then sample, stream and stop (on a
// stop token, a stop string or the token limit). The HTTP server's scheduler runs many sequences
// through LlamaModel directly; this is the single-sequence path `tpserve generate` uses, and the
// text-level pieces (StopMatcher) are shared.
#pragma once

#include "tpserve/engine/driver.h"
#include "tpserve/engine/llama.h"
#include "tpserve/engine/sampler.h"
#include "tpserve/engine/tokenizer.h"

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tps {

// Finds stop strings in streamed text: push() returns the text that is safe to show (it cannot
// be the start of a stop string any more); done() says a stop string was met, and the text
// before it has been returned.
class StopMatcher {
public:
    // `include`: the stop string met is returned too, at the end of the text (vLLM's
    // include_stop_str_in_output)
    explicit StopMatcher(std::vector<std::string> stops, bool include = false);
    std::string push(std::string_view text);
    std::string finish();  // what is held back, when generation ends without a stop string
    bool done() const noexcept { return done_; }
    const std::string& met() const noexcept { return met_; }  // the stop string that ended it (when done)

private:
    std::vector<std::string> stops_;
    std::string met_;
    size_t hold_ = 0;  // longest stop string - 1: how much text may still turn into a stop
    std::string pending_;
    bool include_ = false;
    bool done_ = false;
};

// What a sequence asks the last stage for: greedy without penalties or alternatives needs only the
// winning token (found across the vocabulary slices without gathering logits); anything else is
// sampled by the backend where it can (`backend_samples`: LlamaModel::samples_rows(), one
// process), else on rank 0 from the gathered logits.
StepOutputKind output_kind_for(const SamplingParams& p, bool backend_samples) noexcept;
// Makes `e` ask for `kind`; a sampled entry also gets the sequence's draw and penalties for this
// step (Sampler::prepare: the same draw if the step is built again).
void ask_for(SequenceStep& e, StepOutputKind kind, Sampler& sampler);
// The token a step's output gives its sequence, recorded in `sampler`: the greedy pick, the
// backend's draw, or a draw from the logits here.
Sampled take_token(const StepOutput::Entry& e, StepOutputKind kind, Sampler& sampler);

struct GenerateOptions {
    int64_t max_tokens = 128;
    SamplingParams sampling;
    std::vector<std::string> stop;   // stop strings (not included in the output)
    std::vector<int32_t> stop_ids;   // stop tokens (not included in the output)
    int64_t seq_id = 0;
};

struct GenerateResult {
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    double prefill_seconds = 0;
    double decode_seconds = 0;       // from the first token to the last
    std::string finish_reason;       // "stop" or "length"
    std::vector<int32_t> tokens;     // generated ids (without a stop token)
};

// Runs `prompt` on `model` (as sequence options.seq_id, released at the end) and calls on_text
// with each piece of output text as it becomes final.
GenerateResult generate(LlamaModel& model, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const std::function<void(std::string_view)>& on_text);
// The same through a Driver: on rank 0 of a split model, the other ranks running run_worker().
GenerateResult generate(Driver& driver, const Tokenizer& tokenizer, std::span<const int32_t> prompt,
                        const GenerateOptions& options, const std::function<void(std::string_view)>& on_text);

}  // namespace tps
