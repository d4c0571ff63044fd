// An answer in another API's shape than OpenAI chat's (the Responses API: responses_api.h;
// Anthropic's Messages API: messages_api.h), built from the chat answer's parts: the writer
// (response.h) reads the output as for chat (reasoning, content, tool calls) and hands each part
// here instead of writing chat chunks.
#pragma once

#include "tpserve/serve/api_error.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace tps::serve {

// A request's usage: each prompt counted once, whatever its number of choices.
struct Usage {
    int64_t prompt = 0;
    int64_t completion = 0;
    int64_t cached = 0;  // of the prompt tokens, those the prefix cache held
    // of the output tokens, a reasoning model's thoughts (up to the one that ends them); the
    // writer (response.h) counts them, -1 where the output is not read for thoughts
    int64_t reasoning = -1;
};

class WireOutput {
public:
    virtual ~WireOutput() = default;
    // The stream's first events.
    virtual std::string start() = 0;
    // The events of one chat delta ({reasoning_content, content, tool_calls}, and `logprobs`: chat's
    // entries for the piece's tokens, when asked for); `finish` (chat's finish reason, with the
    // stop string that ended the text if one did) closes the answer.
    virtual std::string delta(const nlohmann::ordered_json& delta, const std::string& finish, const std::string& stop_string) = 0;
    // The stream's last events, with the usage.
    virtual std::string end(const Usage& usage) = 0;
    // A failure after the stream began.
    virtual std::string error(const ApiError& e) = 0;
    // The whole answer from the chat message (with `logprobs`: the entries of the answer's tokens,
    // the thoughts' left out, when asked for).
    virtual nlohmann::ordered_json whole(const nlohmann::ordered_json& message, const std::string& finish,
                                         const std::string& stop_string, const Usage& usage) = 0;
    // An error answered before anything was written, in this API's shape.
    virtual std::string error_body(const ApiError& e) const { return e.body(); }
};

}  // namespace tps::serve
