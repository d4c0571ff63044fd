// OpenAI's Responses API (POST /v1/responses) served by the chat pipeline. A Responses request is
// read into the chat request it asks for (instructions and input items as messages, function
// tools, text.format as response_format, max_output_tokens), so every check and every feature of
// chat applies; what cannot be served (conversation objects, hosted tools, images, summaries) is
// a 400 naming the Responses field. Finished responses may be kept (response_store.h), and
// previous_response_id continues a kept one's conversation. The answer, whole or streamed, is built from the chat
// answer's parts: a reasoning model's thoughts become a reasoning item, the text a message item,
// each tool call a function_call item. docs/api.md describes the wire forms.
#pragma once

#include "tpserve/engine/tokenizer.h"
#include "tpserve/serve/api_error.h"
#include "tpserve/serve/request.h"
#include "tpserve/serve/response_store.h"
#include "tpserve/serve/wire_output.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tps::serve {

struct ResponsesRequest {
    std::vector<GenerationRequest> choices;  // one: the Responses API has no `n`
    // what the response object repeats of the request (instructions, tools, text, ...)
    nlohmann::ordered_json shown;
    // the conversation's input items: the stored one's (previous_response_id), then `input`
    nlohmann::ordered_json history;
    size_t inherited = 0;  // of history, the items the stored response gave
    bool store = false;  // keep the response (`store`, the default, where the server keeps any)
};

// The body read and checked; ApiError (400) naming the Responses field for anything wrong or not
// offered. `store`: where responses are kept (null or disabled: none, and previous_response_id is
// refused).
ResponsesRequest parse_responses_request(std::string_view body, const ServedModel& model, ResponseStore* store = nullptr);

// The response object of one request, and the events of its stream (each `event: <type>` with
// `data: {...}` carrying a sequence number). It is fed the chat answer's parts: deltas as chat's
// stream has them ({reasoning_content, content, tool_calls}) or the whole chat message.
class ResponsesOutput : public WireOutput {
public:
    ResponsesOutput(nlohmann::ordered_json shown, std::string model);

    // response.created, response.in_progress
    std::string start() override;
    // The events of one chat delta; `finish` (the chat finish reason) closes the open item.
    std::string delta(const nlohmann::ordered_json& delta, const std::string& finish, const std::string& stop_string) override;
    // response.completed (or response.incomplete when max_output_tokens cut it), with usage.
    std::string end(const Usage& usage) override;
    // A failure after the stream began: an error event, then response.failed.
    std::string error(const ApiError& e) override;
    // The whole response object from the chat message and its finish reason.
    nlohmann::ordered_json whole(const nlohmann::ordered_json& message, const std::string& finish, const std::string& stop_string,
                                 const Usage& usage) override;
    const std::string& id() const noexcept { return id_; }

    // Called with the finished response object (completed or incomplete, not failed): the store.
    std::function<void(const nlohmann::ordered_json&)> on_done;

private:
    enum class Open { none, reasoning, message, call };
    std::string event(nlohmann::ordered_json body);
    std::string open(Open kind);
    std::string close(const std::string& status);
    std::string add_call_pieces(const nlohmann::ordered_json& pieces);
    nlohmann::ordered_json response(const std::string& status, const Usage* usage) const;
    static std::string status_of(const std::string& finish);

    nlohmann::ordered_json shown_;
    std::string model_;
    std::string id_;
    int64_t created_;
    int64_t sequence_ = 0;
    nlohmann::ordered_json output_ = nlohmann::ordered_json::array();  // the items done
    Open open_ = Open::none;  // the item being streamed
    std::string open_id_;
    std::string open_text_;  // (a function call's: its arguments so far)
    nlohmann::ordered_json open_logprobs_;  // a message's: its tokens' (include message.output_text.logprobs)
    nlohmann::ordered_json open_call_;  // the function_call item being streamed
    std::string finish_;
};

}  // namespace tps::serve
