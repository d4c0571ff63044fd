// Tool calls in a chat model's output: when a request offers `tools`, the text the model writes is
// read for calls in its family's format and answered as OpenAI's `tool_calls` (as vLLM's
// --tool-call-parser):
//   hermes      (Qwen2.5, Hermes): <tool_call>{"name": ..., "arguments": {...}}</tool_call>, one
//               or more, among ordinary text
//   llama3_json (Llama 3.1 / 3.2): the output is {"name": ..., "parameters": {...}} (or
//               "arguments"), optionally after <|python_tag|>, several separated by ';'
//   mistral     (Mistral v0.3 and later): the output is [{"name": ..., "arguments": {...}}, ...],
//               after [TOOL_CALLS] when special tokens are kept; call ids are 9 letters and digits,
//               as Mistral's template demands when the call comes back
//   json_list   (tool_choice "required" or a named function, any model): a grammar forces the
//               output to be [{"name": ..., "parameters": {...}}, ...] (request.h, as vLLM does)
//
// A call is read as the text grows, so a stream shows it piece by piece: once its name and the
// opening brace of its arguments are written, the call begins (id and name), and the arguments
// follow as the model writes them. The arguments are the model's own text of the JSON object:
// streamed or whole, they are the same bytes, and like OpenAI's they are not promised to be valid
// JSON unless a grammar forced them (a call cut by max_tokens ends where the output did). A call
// written another way (arguments first, arguments as a JSON string) is read once its object is
// complete, and checked then. Text that is not a call is ordinary content, byte for byte when the
// output holds no call; when it holds one, blanks before a call and at the end are dropped (and in
// the formats whose output is the calls, blanks before text that follows them). Pure: no I/O.
#pragma once

#include <cstddef>
#include <optional>
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
    std::string arguments;  // the model's text of a JSON object
};

// A piece of a call as it streams: the call's first piece has its id and name (and the arguments
// begun so far, perhaps none); each later piece has only more of the arguments.
struct ToolCallPiece {
    size_t index = 0;  // the call's place among the output's calls
    std::string id, name;
    std::string arguments;
};

// What one step of output adds: content to show, and pieces of calls (in order).
struct ToolStep {
    std::string content;
    std::vector<ToolCallPiece> calls;
};

// Reads one output's calls as it grows. The pieces depend on the text alone, never on how it was
// cut into steps: a stream's pieces put together are what the whole output reads as.
class ToolCallReader {
public:
    // `first_only`: calls after the first are read past and dropped (parallel_tool_calls false).
    explicit ToolCallReader(ToolParser p, bool first_only = false);

    // More output; `last`: no more follows (held text is settled then).
    ToolStep push(std::string_view text, bool last);

    size_t calls() const noexcept { return emitted_; }
    // The output ended inside a call's arguments (cut by max_tokens or a stop).
    bool cut() const noexcept { return cut_; }

private:
    enum class At { start, content, call_lead, call, object, args, after_args, between, rest };
    bool step(ToolStep& out, bool last);
    void show(ToolStep& out, size_t begin, size_t end);
    void begin_call(ToolStep& out, std::string name, std::string arguments);
    void add_arguments(ToolStep& out, std::string_view piece);
    bool rest_from(size_t at);
    bool call_failed(ToolStep& out);
    std::string_view tag() const noexcept;

    ToolParser p_;
    bool first_only_;
    std::string text_;
    size_t pos_ = 0;        // where reading goes on
    At at_;
    std::string held_;      // blank content not shown yet
    size_t block_ = 0;      // hermes: where the call's <tool_call> begins
    size_t call_ = 0;       // the '{' of the call being read
    size_t after_ = 0;      // where the text after the last call begins
    size_t emitted_ = 0;    // calls begun and shown
    bool silent_ = false;   // the call being read is dropped (first_only)
    bool cut_ = false;
    // the arguments' brackets outside strings, while they are being read
    int depth_ = 0;
    bool in_string_ = false, escaped_ = false;
};

struct ToolOutput {
    std::string content;  // the text that is not a call (all of it when there is none)
    std::vector<ToolCall> calls;
    bool complete = true;  // every call's arguments ended (false: the output ended inside one)
};

// The whole output read at once (the same reader, one step).
ToolOutput parse_tool_calls(ToolParser p, std::string_view text, bool first_only = false);

}  // namespace tps::serve
