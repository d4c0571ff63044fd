// Tool calls in a chat model's output: when a request offers `tools`, the text the model writes is
// read for calls in its family's format and answered as OpenAI's `tool_calls` (as vLLM's
// --tool-call-parser):
//   hermes      (Qwen2.5, Hermes): <tool_call>{"name": ..., "arguments": {...}}</tool_call>, one
//               or more, after any ordinary text
//   llama3_json (Llama 3.1 / 3.2): the whole output is {"name": ..., "parameters": {...}} (or
//               "arguments"), optionally after <|python_tag|>, several separated by ';'
//   mistral     (Mistral v0.3 and later): the whole output is [{"name": ..., "arguments": {...}}, ...],
//               after [TOOL_CALLS] when special tokens are kept; call ids are 9 letters and digits,
//               as Mistral's template demands when the call comes back
//   json_list   (tool_choice "required" or a named function, any model): a grammar forces the
//               output to be [{"name": ..., "parameters": {...}}, ...] (request.h, as vLLM does)
// Output that is not a well-formed call is ordinary content, unchanged. Pure functions: no I/O.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tps::serve {

enum class ToolParser { none, hermes, llama3_json, mistral, json_list };

// "none", "hermes", "llama3_json", "mistral"; "auto" picks from the chat template's source (its own tool
// syntax), none when it shows none. UsageError for another name.
ToolParser tool_parser_named(std::string_view name, std::string_view chat_template_source);
const char* tool_parser_name(ToolParser p) noexcept;

struct ToolCall {
    std::string id;         // "call_" + 24 hex digits (mistral: 9 letters and digits)
    std::string name;
    std::string arguments;  // a JSON object, as text
};

struct ToolOutput {
    std::string content;  // the text that is not a call (all of it when there is none)
    std::vector<ToolCall> calls;
};

ToolOutput parse_tool_calls(ToolParser p, std::string_view text);

// While streaming: how many bytes from the start of `text` (the output so far) are ordinary
// content for sure; what follows may still turn out to be (or is) a call, and is held back.
size_t tool_content_prefix(ToolParser p, std::string_view text);

}  // namespace tps::serve
