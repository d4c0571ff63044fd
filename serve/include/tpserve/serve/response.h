// The OpenAI response objects for one generation request, built from the pieces the engine pushes
// (job.h) for each of its choices: server-sent-event chunks while streaming (`text_completion` /
// `chat.completion.chunk`, each carrying one choice's piece under its index), or the whole
// `text_completion` / `chat.completion` at the end; log-probabilities in each endpoint's own
// shape; usage. docs/api.md describes the wire forms.
#pragma once

#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/job.h"
#include "tpserve/serve/reasoning.h"
#include "tpserve/serve/wire_output.h"
#include "tpserve/serve/tool_calls.h"

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tps::serve {

// `prefix` + 24 hex digits ("chatcmpl-", "resp_", ...): unique within the process, unguessable
// across restarts.
std::string object_id(std::string_view prefix);

class ResponseWriter {
public:
    // `request`: any of the request's choices (they share every field but the prompt and seed).
    // `tools`: how the model writes tool calls, read from a chat output when the request offers
    // tools (request.reads_tool_calls): `tool_calls` (finish_reason "tool_calls" unless the output
    // ended inside one), streamed piece by piece as OpenAI's: a call's id and name first, then its
    // arguments as they are written (tool_calls.h). Text that may yet be a call is held back.
    // A reasoning model's chat output (request.splits_reasoning) gives its thoughts as
    // `reasoning_content` and the rest, read for calls as above, as `content`.
    ResponseWriter(const GenerationRequest& request, std::string model_name, const Tokenizer& tokenizer, int64_t created,
                   ToolParser tools = ToolParser::none);

    // Streaming: the events to write for the start of the stream (chat: the assistant role of
    // each choice), for one piece of choice `index`, and after the last piece of every choice
    // (the usage chunk if asked, then [DONE]).
    std::string stream_start();
    std::string stream_piece(int index, const Delta& d);
    std::string stream_end(const Usage& usage) const;
    // An error after the stream began: one event, then [DONE] (or the wire's own events).
    std::string stream_error(const ApiError& e);
    // An error before anything was written: the OpenAI error object (or the wire's own shape).
    std::string error_body(const ApiError& e) const;

    // The answer goes out in another API's shape (a chat request with one choice): the Responses
    // API's (responses_api.h) or Anthropic's (messages_api.h).
    void speak(std::unique_ptr<WireOutput> wire);

    // Not streaming: collect every piece of every choice, then the whole object.
    void add(int index, const Delta& d);
    std::string whole(const Usage& usage);

private:
    struct Choice {
        std::string text;  // collected (not streaming)
        std::optional<ToolCallReader> calls;  // streaming with tools: the output read for calls
        std::string finish_reason;
        std::vector<TokenOut> tokens;
        int64_t text_offset = 0;  // completions logprobs: code points before the next token
        std::optional<ReasoningStream> thoughts;  // streaming a reasoning model's chat output
        bool started = false;                     // streaming: a piece has been written
        nlohmann::ordered_json prompt_logprobs;   // vLLM's prompt_logprobs (null: not asked)
        std::string stop_string;                  // the stop string that ended it, if one did
        int32_t stop_token = -1;                  // the stop_token_ids token that ended it, if one did
        // a reasoning model's: the output so far (the echo first) and how far </think> was looked
        // for in it; the output tokens when the thoughts ended (-1: not yet)
        std::string said;
        size_t searched = 0;
        int64_t thought_tokens = -1;
        int64_t output_tokens = 0;  // output tokens so far
    };
    void count_thoughts(Choice& c, const std::string& text, int64_t tokens_so_far);
    int64_t thought_tokens(const Choice& c) const;
    Usage with_reasoning(Usage u) const;
    std::string event(const std::string& json) const;
    // (with chunk_usage_ as its usage)
    std::string chunk(int index, nlohmann::ordered_json body, nlohmann::ordered_json logprobs, const std::string& finish) const;
    nlohmann::ordered_json envelope(const char* object, nlohmann::ordered_json choices, const Usage* usage) const;
    const char* stream_object() const;
    void add_logprobs(const std::vector<TokenOut>& tokens, Choice& c, void* into);
    std::string token_text(int32_t id) const;
    nlohmann::ordered_json prompt_logprobs_json(const std::vector<TokenOut>& scores) const;
    Choice& choice(int index);

    Endpoint endpoint_;
    ToolParser tools_;
    bool splits_reasoning_, thinks_, include_reasoning_, token_ids_as_text_, one_tool_call_;
    std::string chat_echo_;  // chat: what each answer starts with (request.chat_echo)
    int logprobs_;
    bool include_usage_;
    bool continuous_usage_;         // usage in every chunk (stream_options.continuous_usage_stats)
    int64_t chat_prompt_tokens_;    // chat: the prompt every choice shares (for the role chunks' usage)
    nlohmann::ordered_json chunk_usage_;  // what the chunks being written carry as usage (null: none)
    std::unique_ptr<WireOutput> wire_;  // set by speak: chat's parts become another API's answer
    std::string stop_string_;           // streaming: the piece being written ended on this stop string
    int32_t stop_token_ = -1;           // ... or this stop token
    std::string model_;
    const Tokenizer& tok_;
    int64_t created_;
    std::string id_;
    std::vector<Choice> choices_;
};

}  // namespace tps::serve
