// Reading tool calls out of a model's output (tool_calls.h).
#include "tpserve/serve/tool_calls.h"

#include "tpserve/common/check.h"
#include "tpserve/common/json_scan.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <random>

namespace tps::serve {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralTag = "[TOOL_CALLS]";

bool blank(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && blank(s.back())) s.remove_suffix(1);
    return s;
}

// "call_" + 24 hex digits; Mistral's template refuses any id but 9 letters and digits
std::string call_id(ToolParser p) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    if (p == ToolParser::mistral) {
        static constexpr std::string_view kChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        std::string id(9, 'a');
        for (char& c : id) c = kChars[rng() % kChars.size()];
        return id;
    }
    return fmt::format("call_{:016x}{:08x}", rng(), static_cast<uint32_t>(rng()));
}

// {"name": "...", <args_key>: {...} or "..."} as a call; false when it is not one.
bool read_call(ToolParser p, const Json& j, std::initializer_list<const char*> args_keys, ToolCall& out) {
    if (!j.is_object()) return false;
    const auto name = j.find("name");
    if (name == j.end() || !name->is_string() || name->get<std::string>().empty()) return false;
    const Json* args = nullptr;
    for (const char* key : args_keys) {
        if (const auto a = j.find(key); a != j.end()) {
            args = &*a;
            break;
        }
    }
    if (!args) return false;
    if (args->is_object()) {
        out.arguments = args->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else if (args->is_string() && Json::parse(args->get<std::string>(), nullptr, false).is_object()) {
        out.arguments = args->get<std::string>();
    } else {
        return false;
    }
    out.name = name->get<std::string>();
    out.id = call_id(p);
    return true;
}

// JSON text, unless it nests deeper than any call's (a model's output is not trusted to be
// shallow) or does not parse: then a discarded value.
Json parse_output(std::string_view text) {
    if (nests_deeper_than(text, 64)) return Json(Json::value_t::discarded);
    return Json::parse(text.begin(), text.end(), nullptr, false);
}

ToolOutput parse_hermes(std::string_view text) {
    const size_t first = text.find(kHermesOpen);
    if (first == std::string_view::npos) return {std::string(text), {}};
    ToolOutput out;
    out.content = std::string(text.substr(0, first));
    size_t pos = first;
    while (pos != std::string_view::npos) {
        pos += kHermesOpen.size();
        const size_t end = text.find(kHermesClose, pos);  // the last may be cut off by the stop token
        ToolCall call;
        const std::string_view body = trim(text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
        if (!read_call(ToolParser::hermes, parse_output(body), {"arguments", "parameters"}, call)) {
            return {std::string(text), {}};
        }
        out.calls.push_back(std::move(call));
        if (end == std::string_view::npos) break;
        // text between and after the calls is content too
        const size_t after = end + kHermesClose.size();
        pos = text.find(kHermesOpen, after);
        out.content += text.substr(after, pos == std::string_view::npos ? std::string_view::npos : pos - after);
    }
    if (trim(out.content).empty()) out.content.clear();
    return out;
}

ToolOutput parse_llama3_json(std::string_view text) {
    std::string_view rest = trim(text);
    if (rest.starts_with(kPythonTag)) rest = trim(rest.substr(kPythonTag.size()));
    ToolOutput out;
    while (!rest.empty()) {
        if (rest.front() != '{') return {std::string(text), {}};
        const size_t end = value_end(rest);
        ToolCall call;
        if (end == std::string_view::npos ||
            !read_call(ToolParser::llama3_json, parse_output(rest.substr(0, end)), {"parameters", "arguments"}, call)) {
            return {std::string(text), {}};
        }
        out.calls.push_back(std::move(call));
        rest = trim(rest.substr(end));
        if (!rest.empty() && rest.front() == ';') rest = trim(rest.substr(1));
    }
    if (out.calls.empty()) return {std::string(text), {}};
    return out;
}

// The whole output is [{"name": ..., "arguments": {...}}, ...], after [TOOL_CALLS] if kept (mistral;
// json_list: the same list, "parameters" first, with "call_" ids).
ToolOutput parse_list(ToolParser p, std::string_view text) {
    std::string_view rest = trim(text);
    if (p == ToolParser::mistral && rest.starts_with(kMistralTag)) rest = trim(rest.substr(kMistralTag.size()));
    if (rest.empty() || rest.front() != '[') return {std::string(text), {}};
    const size_t end = value_end(rest);
    if (end == std::string_view::npos || !trim(rest.substr(end)).empty()) return {std::string(text), {}};
    const Json list = parse_output(rest.substr(0, end));
    if (!list.is_array() || list.empty()) return {std::string(text), {}};
    ToolOutput out;
    for (const Json& item : list) {
        ToolCall call;
        if (!read_call(p, item, {"arguments", "parameters"}, call)) {
            return {std::string(text), {}};
        }
        out.calls.push_back(std::move(call));
    }
    return out;
}

// Formats whose call is the whole output: held while the output so far may still be one (it
// begins with `open`, or with the format's tag).
size_t whole_output_prefix(std::string_view text, char open, std::string_view tag) {
    size_t i = 0;
    while (i < text.size() && blank(text[i])) ++i;
    if (i == text.size()) return 0;
    const std::string_view from = text.substr(i);
    if (from.front() == open || from.starts_with(tag) || tag.starts_with(from)) return 0;
    return text.size();
}

}  // namespace

ToolParser tool_parser_named(std::string_view name, std::string_view chat_template_source) {
    if (name == "none") return ToolParser::none;
    if (name == "hermes") return ToolParser::hermes;
    if (name == "llama3_json") return ToolParser::llama3_json;
    if (name == "mistral") return ToolParser::mistral;
    TPS_CHECK_AS(UsageError, name == "auto", "--tool-call-parser: '{}' is not auto, none, hermes, llama3_json or mistral", name);
    // the template's own way of writing a call back into the conversation
    if (chat_template_source.find(kHermesOpen) != std::string_view::npos) return ToolParser::hermes;
    if (chat_template_source.find(kMistralTag) != std::string_view::npos) return ToolParser::mistral;
    if (chat_template_source.find(kPythonTag) != std::string_view::npos ||
        chat_template_source.find("\"parameters\": ") != std::string_view::npos) {
        return ToolParser::llama3_json;
    }
    return ToolParser::none;
}

const char* tool_parser_name(ToolParser p) noexcept {
    switch (p) {
        case ToolParser::hermes: return "hermes";
        case ToolParser::llama3_json: return "llama3_json";
        case ToolParser::mistral: return "mistral";
        case ToolParser::json_list: return "json_list";
        case ToolParser::none: break;
    }
    return "none";
}

ToolOutput parse_tool_calls(ToolParser p, std::string_view text) {
    switch (p) {
        case ToolParser::hermes: return parse_hermes(text);
        case ToolParser::llama3_json: return parse_llama3_json(text);
        case ToolParser::mistral:
        case ToolParser::json_list: return parse_list(p, text);
        case ToolParser::none: break;
    }
    return {std::string(text), {}};
}

size_t tool_content_prefix(ToolParser p, std::string_view text) {
    if (p == ToolParser::hermes) {
        if (const size_t at = text.find(kHermesOpen); at != std::string_view::npos) return at;
        // a tail that may be the start of the tag
        for (size_t n = std::min(text.size(), kHermesOpen.size() - 1); n > 0; --n) {
            if (kHermesOpen.starts_with(text.substr(text.size() - n))) return text.size() - n;
        }
        return text.size();
    }
    if (p == ToolParser::llama3_json) return whole_output_prefix(text, '{', kPythonTag);
    if (p == ToolParser::mistral) return whole_output_prefix(text, '[', kMistralTag);
    if (p == ToolParser::json_list) return 0;  // all of it is the forced list
    return text.size();
}

}  // namespace tps::serve
