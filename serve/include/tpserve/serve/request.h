// The OpenAI requests, parsed and checked: /v1/completions and /v1/chat/completions bodies become
// their choices, one GenerationRequest each (the prompt already tokenized, every parameter
// range-checked), or an ApiError (400 / 404) naming the field. Unknown fields are ignored, as the
// reference API does.
// Pure functions of the body and the served model: no I/O, so they are fuzzed on their own.
#pragma once

#include "tpserve/engine/chat_template.h"
#include "tpserve/engine/sampler.h"
#include "tpserve/engine/structured/grammar_constraint.h"
#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/api_error.h"
#include "tpserve/serve/tool_calls.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tps::serve {

// What the API layer knows of the model it serves.
struct ServedModel {
    std::string name;                             // the `model` clients name (and the answers say)
    std::vector<std::string> aliases;             // other names clients may give (--served-model-name a,b)
    // whether `asked` names this model
    bool answers_to(std::string_view asked) const {
        return asked == name || std::find(aliases.begin(), aliases.end(), asked) != aliases.end();
    }
    const Tokenizer* tokenizer = nullptr;
    const ChatTemplate* chat_template = nullptr;  // nullptr: the model has none
    std::string bos_token, eos_token;             // as text, for the template
    std::vector<int32_t> stop_ids;                // end-of-sequence tokens
    int64_t context = 0;                          // most tokens one sequence may hold
    int64_t vocab = 0;                            // the model's vocabulary (0: the tokenizer's)
    int64_t created = 0;                          // unix time the server started
    ToolParser tool_parser = ToolParser::none;    // how calls are read from the output (--tool-call-parser)
    bool priority_scheduling = false;             // requests' `priority` orders the queue (--scheduling-policy priority)
    bool reasons = false;                         // chat output is thoughts, then the answer (--reasoning-parser; reasoning.h)
    // what a request that leaves a sampling field out gets: OpenAI's defaults, or the model's
    // generation_config.json over them (--generation-config auto)
    SamplingParams sampling_defaults;
    // the vocabulary as bytes, for structured output (null: requests for it are refused)
    std::shared_ptr<const structured::TokenBytes> token_bytes;
};

enum class Endpoint : uint8_t { completions, chat };

struct GenerationRequest {
    Endpoint endpoint = Endpoint::completions;
    std::string model;               // the name the request gave the model (the answer says it back; empty: the served name)
    std::vector<int32_t> prompt;
    int64_t max_tokens = 16;
    SamplingParams sampling;
    std::vector<std::string> stop;   // stop strings
    std::vector<int32_t> stop_ids;   // stop tokens (empty with ignore_eos)
    size_t eos_ids = 0;              // the first eos_ids of stop_ids are the model's end; the rest stop_token_ids
    bool skip_special_tokens = true; // vLLM's extension: false writes special tokens' text too
    bool stream = false;
    bool include_usage = false;
    bool continuous_usage = false;   // vLLM's stream_options.continuous_usage_stats: usage in every chunk
    // -1: no log-probabilities; otherwise the number of alternatives per token (0..20)
    int logprobs = -1;
    // completions: the prompt's text comes first in the output, and with logprobs each prompt
    // token's log-probability (the first's is null); max_tokens may then be 0 (scoring only)
    bool echo = false;
    // vLLM's prompt_logprobs: -1 none; else every prompt token's log-probability, rank and this
    // many alternatives, in the response (not streamed)
    int prompt_logprobs = -1;
    // vLLM's priority (--scheduling-policy priority): lower is served first; equal, by arrival
    int64_t priority = 0;
    bool scores_prompt() const noexcept { return (echo && logprobs >= 0) || prompt_logprobs >= 0; }
    // the alternatives a scored prompt position needs: what each of the two asks for, the most
    int score_top() const noexcept { return std::max(echo ? logprobs : -1, prompt_logprobs); }
    // chat's echo (vLLM's): the last message's text, when it is the assistant's, comes first in
    // the answer's content (a reply the client began, continued with continue_final_message)
    std::string chat_echo;
    // chat with `tools` (tool_choice auto) on a model whose calls can be read: the output is read
    // for them (tool_calls.h)
    bool reads_tool_calls = false;
    // chat with tool_choice "required" or a named function: a grammar forces the output to be a
    // JSON list of calls to the offered functions (one call to the named one), each's parameters
    // valid under its schema; the answer is read as ToolParser::json_list
    bool forces_tool_calls = false;
    // parallel_tool_calls false: at most one call (a forced list holds one; a read answer keeps its first)
    bool one_tool_call = false;
    // chat on a reasoning model (ServedModel::reasons): the output is split into reasoning_content
    // and content (reasoning.h). `thinks`: the prompt leaves the model thinking first, so an output
    // format (and forced calls) apply only after </think>. include_reasoning (vLLM's field, default
    // true): false leaves the thoughts out of the response.
    // vLLM's: the stop string that ended the output is kept at its end; log-probabilities name
    // tokens "token_id:N"; only the prompt's last truncate_prompt tokens are fed (0: all)
    bool include_stop_str = false;
    bool token_ids_as_text = false;
    int64_t truncate_prompt = 0;
    bool splits_reasoning = false;
    bool thinks = false;
    bool include_reasoning = true;
    // Where this choice stands in its request: `n` choices per prompt, this one `index` in the
    // response's choices (prompt * n + sample). Each has its own seed: the request's + sample.
    int n = 1;
    int index = 0;
    int choices = 1;  // in the whole request: prompts * n
    bool counts_prompt() const noexcept { return index % n == 0; }  // its prompt's first choice
};

inline constexpr int kMaxTopLogprobs = 20;
// OpenAI allows 4 stop strings; vLLM and Anthropic set no limit, and agent frameworks send more.
// Each is looked for in the held-back tail on every piece: a generous bound keeps that cheap.
inline constexpr size_t kMaxStopStrings = 64;
inline constexpr size_t kMaxLogitBias = 300;  // as OpenAI: each entry is work on every step
inline constexpr size_t kMaxStopBytes = 512;  // a stop string is held back as it streams: keep it short
inline constexpr int kMaxChoices = 128;       // n times the prompts, as OpenAI's limit on n

// The request's choices, in the response's order: `n` (default 1) per prompt; completions take
// several prompts too (an array of strings or of token-id arrays).
std::vector<GenerationRequest> parse_completion_request(std::string_view body, const ServedModel& model);
std::vector<GenerationRequest> parse_chat_request(std::string_view body, const ServedModel& model);

// /tokenize: {"prompt": "...", "add_special_tokens": true} or {"messages": [...]} (the chat
// template and its fields, as chat renders it); /detokenize: {"tokens": [...]}.
std::vector<int32_t> parse_tokenize_request(std::string_view body, const ServedModel& model);
std::vector<int32_t> parse_detokenize_request(std::string_view body, const ServedModel& model);

}  // namespace tps::serve
