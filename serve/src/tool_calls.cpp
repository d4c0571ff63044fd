// Reading tool calls out of a model's output as it grows (tool_calls.h).
#include "tpserve/serve/tool_calls.h"

#include "tpserve/common/check.h"
#include "tpserve/common/json_scan.h"
#include "partial_tag.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <random>
#include <utility>

namespace tps::serve {
namespace {

using Json = nlohmann::ordered_json;
constexpr size_t npos = std::string_view::npos;

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralTag = "[TOOL_CALLS]";
constexpr int kMaxDepth = 64;  // a call checked whole nests no deeper (model output is not trusted)

bool blank(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

size_t skip_blank(std::string_view s, size_t i) {
    while (i < s.size() && blank(s[i])) ++i;
    return i;
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

// One past the closing quote of the JSON string that opens at s[i]; npos while it is not closed.
size_t string_end(std::string_view s, size_t i) {
    for (size_t j = i + 1; j < s.size(); ++j) {
        if (s[j] == '\\') ++j;
        else if (s[j] == '"') return j + 1;
    }
    return npos;
}

// A JSON string token's value, or nothing when it is not one.
std::optional<std::string> string_value(std::string_view token) {
    const Json j = Json::parse(token, nullptr, false);
    if (!j.is_string()) return std::nullopt;
    return j.get<std::string>();
}

enum class Read { ok, more, fail };

// The start of a call as models write it: {"name": "<name>", "arguments" (or "parameters"): {
// `s` begins at the call's '{'; on ok, `args` is where the arguments' '{' is. fail means only
// that the call is not written this way (it may still be one, read whole).
Read read_head(std::string_view s, std::string& name, size_t& args) {
    size_t i = 1;
    auto punct = [&](char c) {
        i = skip_blank(s, i);
        if (i == s.size()) return Read::more;
        if (s[i] != c) return Read::fail;
        ++i;
        return Read::ok;
    };
    auto string = [&](std::string& out) {
        i = skip_blank(s, i);
        if (i == s.size()) return Read::more;
        if (s[i] != '"') return Read::fail;
        const size_t end = string_end(s, i);
        if (end == npos) return Read::more;
        auto v = string_value(s.substr(i, end - i));
        if (!v) return Read::fail;
        out = std::move(*v);
        i = end;
        return Read::ok;
    };
    std::string key;
    Read r = string(key);
    if (r == Read::ok) r = key == "name" ? punct(':') : Read::fail;
    if (r == Read::ok) r = string(name);
    if (r == Read::ok) r = name.empty() ? Read::fail : punct(',');
    if (r == Read::ok) r = string(key);
    if (r == Read::ok) r = key == "arguments" || key == "parameters" ? punct(':') : Read::fail;
    if (r == Read::ok) r = punct('{');
    if (r != Read::ok) return r;
    args = i - 1;
    return Read::ok;
}

// The raw text of member `key` of the complete object `s`; nothing when `s` is not an object of
// members or has no such key.
std::optional<std::string_view> member(std::string_view s, std::string_view key) {
    size_t i = skip_blank(s, 1);
    if (i < s.size() && s[i] == '}') return std::nullopt;
    while (i < s.size()) {
        if (s[i] != '"') return std::nullopt;
        const size_t key_end = string_end(s, i);
        if (key_end == npos) return std::nullopt;
        const auto k = string_value(s.substr(i, key_end - i));
        i = skip_blank(s, key_end);
        if (!k || i == s.size() || s[i] != ':') return std::nullopt;
        const size_t from = skip_blank(s, i + 1);
        if (from == s.size()) return std::nullopt;
        size_t to = npos;
        if (s[from] == '{' || s[from] == '[') {
            const size_t n = value_end(s.substr(from));
            to = n == npos ? npos : from + n;
        } else if (s[from] == '"') {
            to = string_end(s, from);
        } else {
            to = s.find_first_of(",}", from);
            while (to != npos && to > from && blank(s[to - 1])) --to;
        }
        if (to == npos) return std::nullopt;
        if (*k == key) return s.substr(from, to - from);
        i = skip_blank(s, to);
        if (i == s.size() || s[i] == '}') return std::nullopt;
        if (s[i] != ',') return std::nullopt;
        i = skip_blank(s, i + 1);
    }
    return std::nullopt;
}

// A JSON object's text, when `s` is one (and no deeper than a call's).
bool is_object_text(std::string_view s) {
    return !nests_deeper_than(s, kMaxDepth) && Json::parse(s, nullptr, false).is_object();
}

// The complete object `s` as a call written another way than read_head's: its name, and its
// arguments as an object's text (given as an object, or as a JSON string holding one).
// (llama3_json looks for "parameters" first, the others for "arguments")
bool read_whole_call(std::string_view s, bool parameters_first, std::string& name, std::string& args) {
    if (!is_object_text(s)) return false;
    const auto n = member(s, "name");
    const auto n_value = n && n->starts_with('"') ? string_value(*n) : std::nullopt;
    if (!n_value || n_value->empty()) return false;
    const std::string_view keys[] = {parameters_first ? "parameters" : "arguments", parameters_first ? "arguments" : "parameters"};
    for (const std::string_view key : keys) {
        const auto a = member(s, key);
        if (!a) continue;
        if (a->starts_with('{')) {
            args = std::string(*a);
        } else if (const auto text = a->starts_with('"') ? string_value(*a) : std::nullopt; text && is_object_text(*text)) {
            args = *text;
        } else {
            return false;
        }
        name = *n_value;
        return true;
    }
    return false;
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

ToolCallReader::ToolCallReader(ToolParser p, bool first_only)
    : p_(p), first_only_(first_only), at_(p == ToolParser::none ? At::rest : p == ToolParser::hermes ? At::content : At::start) {}

std::string_view ToolCallReader::tag() const noexcept {
    return p_ == ToolParser::llama3_json ? kPythonTag : p_ == ToolParser::mistral ? kMistralTag : std::string_view();
}

// Content from text_[begin, end): a run of blanks is held until something else follows it (then
// shown with it), or the output ends with no call in it.
void ToolCallReader::show(ToolStep& out, size_t begin, size_t end) {
    if (begin >= end) return;
    const std::string_view s = std::string_view(text_).substr(begin, end - begin);
    size_t last = s.size();
    while (last > 0 && blank(s[last - 1])) --last;
    if (last == 0) {
        held_ += s;
        return;
    }
    out.content += held_;
    out.content += s.substr(0, last);
    held_ = std::string(s.substr(last));
}

void ToolCallReader::begin_call(ToolStep& out, std::string name, std::string arguments) {
    held_.clear();  // (blanks before a call are not content)
    silent_ = first_only_ && emitted_ > 0;
    if (silent_) return;
    out.calls.push_back({emitted_++, call_id(p_), std::move(name), std::move(arguments)});
}

void ToolCallReader::add_arguments(ToolStep& out, std::string_view piece) {
    if (silent_ || piece.empty()) return;
    if (out.calls.empty() || out.calls.back().index != emitted_ - 1) out.calls.push_back({emitted_ - 1, {}, {}, {}});
    out.calls.back().arguments += piece;
}

// Everything from `at` on is content. (true: the reader moved on)
bool ToolCallReader::rest_from(size_t at) {
    pos_ = at;
    at_ = At::rest;
    return true;
}

// What began like a call is not one: hermes shows its tag as text and reads on; in the other
// formats the output (or what follows the calls read) is text.
bool ToolCallReader::call_failed(ToolStep& out) {
    if (p_ != ToolParser::hermes) return rest_from(emitted_ == 0 ? 0 : after_);
    show(out, block_, block_ + kHermesOpen.size());
    pos_ = block_ + kHermesOpen.size();
    at_ = At::content;
    return true;
}

// One move of the reader; false when it needs more text (with `last`: when it is done).
bool ToolCallReader::step(ToolStep& out, bool last) {
    const std::string_view s = text_;
    switch (at_) {
        case At::rest:
            show(out, pos_, s.size());
            pos_ = s.size();
            return false;

        case At::start: {  // llama3_json, mistral, json_list: is the output a call?
            size_t i = skip_blank(s, 0);
            const std::string_view t = tag();
            if (!t.empty() && i < s.size()) {
                if (s.substr(i).starts_with(t)) {
                    i = skip_blank(s, i + t.size());
                } else if (t.starts_with(s.substr(i))) {
                    i = s.size();  // (the tag, maybe)
                }
            }
            if (p_ != ToolParser::llama3_json && i < s.size() && s[i] == '[') i = skip_blank(s, i + 1);
            else if (p_ != ToolParser::llama3_json && i < s.size()) return rest_from(0);
            if (i == s.size()) {
                if (!last) return false;
                return rest_from(0);
            }
            if (s[i] != '{') return rest_from(0);
            call_ = i;
            at_ = At::call;
            return true;
        }

        case At::content: {  // hermes: text until a call's tag
            const size_t at = s.find(kHermesOpen, pos_);
            if (at == npos) {
                const size_t end = last ? s.size() : s.size() - partial_tag(s.substr(pos_), kHermesOpen);
                show(out, pos_, end);
                pos_ = end;
                return false;
            }
            show(out, pos_, at);
            block_ = at;
            pos_ = at + kHermesOpen.size();
            at_ = At::call_lead;
            return true;
        }

        case At::call_lead: {  // hermes: the call's '{' after its tag
            const size_t i = skip_blank(s, pos_);
            if (i == s.size()) {
                if (!last) return false;
                return call_failed(out);
            }
            if (s[i] != '{') return call_failed(out);
            call_ = i;
            at_ = At::call;
            return true;
        }

        case At::call: {  // the name, then the arguments' '{'
            std::string name;
            size_t args = 0;
            const Read r = read_head(s.substr(call_), name, args);
            if (r == Read::more && !last) return false;
            if (r != Read::ok) {
                at_ = At::object;
                return true;
            }
            begin_call(out, std::move(name), {});
            pos_ = call_ + args;
            depth_ = 0;
            in_string_ = escaped_ = false;
            at_ = At::args;
            return true;
        }

        case At::object: {  // a call written another way: read once its object is complete
            const size_t n = value_end(s.substr(call_));
            if (n == npos) {
                if (!last) return false;
                return call_failed(out);
            }
            std::string name, args;
            if (!read_whole_call(s.substr(call_, n), p_ == ToolParser::llama3_json, name, args)) return call_failed(out);
            begin_call(out, std::move(name), std::move(args));
            pos_ = call_ + n;
            after_ = pos_;
            at_ = p_ == ToolParser::hermes ? At::after_args : At::between;
            return true;
        }

        case At::args: {  // the arguments as written, until their brackets close
            size_t i = pos_;
            for (; i < s.size(); ++i) {
                const char c = s[i];
                if (in_string_) {
                    if (escaped_) escaped_ = false;
                    else if (c == '\\') escaped_ = true;
                    else if (c == '"') in_string_ = false;
                } else if (c == '"') {
                    in_string_ = true;
                } else if (c == '{' || c == '[') {
                    ++depth_;
                } else if ((c == '}' || c == ']') && --depth_ == 0) {
                    ++i;
                    break;
                }
            }
            add_arguments(out, s.substr(pos_, i - pos_));
            pos_ = i;
            if (depth_ > 0) {
                if (last && !silent_) cut_ = true;
                return false;
            }
            at_ = At::after_args;
            return true;
        }

        case At::after_args: {  // the rest of the call
            if (p_ == ToolParser::hermes) {  // (all of it up to the closing tag, which a stop may cut)
                const size_t close = s.find(kHermesClose, pos_);
                const size_t next = s.find(kHermesOpen, pos_);  // (or up to the next call, the tag left out)
                if (next != npos && next < close) {
                    pos_ = next;
                } else if (close != npos) {
                    pos_ = close + kHermesClose.size();
                } else {
                    return false;
                }
                at_ = At::content;
                return true;
            }
            const size_t i = skip_blank(s, pos_);
            if (i == s.size()) return false;
            if (s[i] == '}') {
                pos_ = i + 1;
            } else {  // more members after the arguments: to the call's closing brace
                const size_t close = scan_brackets(s.substr(i), [](int depth, char) { return depth < 0; });
                if (close == npos) return false;
                pos_ = i + close + 1;
            }
            after_ = pos_;
            at_ = At::between;
            return true;
        }

        case At::between: {  // llama3_json: ';' and the next call; lists: ',' and the next, or ']'
            size_t i = skip_blank(s, pos_);
            if (i == s.size()) return false;
            const char sep = p_ == ToolParser::llama3_json ? ';' : ',';
            if (p_ != ToolParser::llama3_json && s[i] == ']') return rest_from(skip_blank(s, i + 1));
            if (s[i] == sep) i = skip_blank(s, i + 1);
            else if (p_ != ToolParser::llama3_json || s[i] != '{') return rest_from(i);
            if (i == s.size()) return false;  // (a separator that ends the output is dropped)
            if (s[i] != '{') return rest_from(skip_blank(s, after_));
            call_ = i;
            at_ = At::call;
            return true;
        }
    }
    return false;
}

ToolStep ToolCallReader::push(std::string_view text, bool last) {
    text_ += text;
    ToolStep out;
    while (step(out, last)) {
    }
    if (last) {
        if (emitted_ == 0) out.content += held_;
        held_.clear();
    }
    return out;
}

ToolOutput parse_tool_calls(ToolParser p, std::string_view text, bool first_only) {
    ToolCallReader reader(p, first_only);
    ToolStep step = reader.push(text, true);
    ToolOutput out{std::move(step.content), {}, !reader.cut()};
    for (ToolCallPiece& piece : step.calls) {
        if (!piece.id.empty()) out.calls.push_back({std::move(piece.id), std::move(piece.name), {}});
        out.calls.back().arguments += piece.arguments;
    }
    return out;
}

}  // namespace tps::serve
