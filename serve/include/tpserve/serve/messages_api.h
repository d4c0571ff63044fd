// Anthropic's Messages API (POST /v1/messages, what the anthropic SDK and Claude Code speak),
// served by the chat pipeline as vLLM and llama.cpp serve it. A Messages request is read into the
// chat request it stands for (system, messages with text, tool_use and tool_result blocks, tools
// with input_schema, tool_choice, stop_sequences, max_tokens), so every chat check and feature
// applies; what cannot be served (images, documents, server tools, MCP servers) is a 400 naming
// the field. The answer, whole or streamed, is built from the chat answer's parts: thinking, text
// and tool_use blocks, stop_reason, usage; errors have Anthropic's shape. docs/api.md describes it.
#pragma once

#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/request.h"
#include "tpserve/serve/wire_output.h"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace tps::serve {

// The body read and checked (one chat choice); ApiError (400) naming the Messages field.
std::vector<GenerationRequest> parse_messages_request(std::string_view body, const ServedModel& model);
// ... a body already parsed (count_tokens, which lets max_tokens out)
std::vector<GenerationRequest> parse_messages_json(const nlohmann::ordered_json& body, const ServedModel& model);

// {"type": "error", "error": {"type": ..., "message": ...}}, the type from the HTTP status.
std::string anthropic_error_body(const ApiError& e);

class MessagesOutput : public WireOutput {
public:
    // `prompt_tokens`: the rendered prompt's (message_start reports them before any output).
    MessagesOutput(std::string model, int64_t prompt_tokens);

    // message_start
    std::string start() override;
    // content_block_start / _delta / _stop for the thinking, text and tool_use blocks
    std::string delta(const nlohmann::ordered_json& delta, const std::string& finish, const std::string& stop_string) override;
    // message_delta (stop_reason, usage), message_stop
    std::string end(const Usage& usage) override;
    std::string error(const ApiError& e) override;
    nlohmann::ordered_json whole(const nlohmann::ordered_json& message, const std::string& finish, const std::string& stop_string,
                                 const Usage& usage) override;
    std::string error_body(const ApiError& e) const override { return anthropic_error_body(e); }

private:
    enum class Open { none, thinking, text, tool_use };
    std::string event(const nlohmann::ordered_json& body) const;
    std::string open(Open kind);
    std::string close();
    static nlohmann::ordered_json tool_use(const nlohmann::ordered_json& call);
    static nlohmann::ordered_json usage_json(const Usage& usage);
    void stop_reason(const std::string& finish, const std::string& stop_string);

    std::string model_;
    int64_t prompt_tokens_;
    std::string id_;
    Open open_ = Open::none;
    int index_ = -1;  // the open (or last) content block's
    std::string stop_reason_ = "end_turn";
    nlohmann::ordered_json stop_sequence_;  // null, or the stop string that ended the text
};

}  // namespace tps::serve
