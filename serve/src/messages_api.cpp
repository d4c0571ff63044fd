// Anthropic's Messages API on the chat pipeline (messages_api.h).
#include "tpserve/serve/messages_api.h"

#include "request_fields.h"
#include "tpserve/common/json_scan.h"
#include "tpserve/serve/response.h"

#include <fmt/format.h>

#include <map>

namespace tps::serve {
namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// A block's text field, checked.
std::string block_text(const Json& block, const char* name, const std::string& where) {
    const Json* v = field(block, name);
    if (!v || !v->is_string()) throw ApiError::invalid(fmt::format("'{}.{}' must be a string", where, name), "messages");
    return v->get<std::string>();
}

// A tool_result's content: a string or text blocks.
std::string result_text(const Json& content, const std::string& where) {
    if (content.is_string()) return content.get<std::string>();
    if (!content.is_array()) throw ApiError::invalid(fmt::format("'{}.content' must be a string or text blocks", where), "messages");
    std::string text;
    for (size_t k = 0; k < content.size(); ++k) {
        const std::string at = fmt::format("{}.content[{}]", where, k);
        const Json* type = content[k].is_object() ? field(content[k], "type") : nullptr;
        if (!type || *type != "text") throw ApiError::invalid(fmt::format("'{}' must be a text block: this server reads text only", at), "messages");
        text += block_text(content[k], "text", at);
    }
    return text;
}

// system (a string or text blocks), then each message: text blocks joined; an assistant's tool_use
// blocks as its tool_calls (input as JSON text); a user's tool_result blocks as tool messages
// (with the function's name), before its text; thinking blocks left out (templates drop earlier
// thoughts).
Json chat_messages_of(const Json& j) {
    Json out = Json::array();
    if (const Json* system = field(j, "system")) {
        if (!system->is_string() && !system->is_array()) {
            throw ApiError::invalid(fmt::format("'system' must be a string or text blocks, got {}", type_name(*system)), "system");
        }
        std::string text;
        if (system->is_string()) {
            text = system->get<std::string>();
        } else {
            for (size_t k = 0; k < system->size(); ++k) {
                const std::string at = fmt::format("system[{}]", k);
                const Json* type = (*system)[k].is_object() ? field((*system)[k], "type") : nullptr;
                if (!type || *type != "text") throw ApiError::invalid(fmt::format("'{}' must be a text block", at), "system");
                if (!text.empty()) text += "\n";
                text += block_text((*system)[k], "text", at);
            }
        }
        out.push_back({{"role", "system"}, {"content", text}});
    }
    const Json* messages = field(j, "messages");
    if (!messages) throw ApiError::invalid("'messages' is required", "messages");
    if (!messages->is_array() || messages->empty()) throw ApiError::invalid("'messages' must be a non-empty array", "messages");
    std::map<std::string, std::string> tool_names;  // tool_use id -> name
    for (size_t i = 0; i < messages->size(); ++i) {
        const Json& m = (*messages)[i];
        const std::string where = fmt::format("messages[{}]", i);
        if (!m.is_object()) throw ApiError::invalid(fmt::format("'{}' must be an object", where), "messages");
        const Json* role = field(m, "role");
        if (!role || (*role != "user" && *role != "assistant")) {
            throw ApiError::invalid(fmt::format("'{}.role' must be \"user\" or \"assistant\" (the system prompt is 'system')", where),
                                    "messages");
        }
        const bool assistant = *role == "assistant";
        const Json* content = field(m, "content");
        if (!content) throw ApiError::invalid(fmt::format("'{}.content' is required", where), "messages");
        if (content->is_string()) {
            out.push_back({{"role", *role}, {"content", *content}});
            continue;
        }
        if (!content->is_array()) throw ApiError::invalid(fmt::format("'{}.content' must be a string or an array of blocks", where), "messages");
        std::string text;
        Json calls = Json::array();
        Json results = Json::array();
        for (size_t k = 0; k < content->size(); ++k) {
            const Json& block = (*content)[k];
            const std::string at = fmt::format("{}.content[{}]", where, k);
            const Json* type = block.is_object() ? field(block, "type") : nullptr;
            if (!type || !type->is_string()) throw ApiError::invalid(fmt::format("'{}' must be an object with a 'type'", at), "messages");
            const std::string kind = type->get<std::string>();
            if (kind == "text") {
                text += block_text(block, "text", at);
            } else if (kind == "tool_use" && assistant) {
                const std::string id = block_text(block, "id", at);
                const std::string name = block_text(block, "name", at);
                const Json* input = field(block, "input");
                if (!input || !input->is_object()) throw ApiError::invalid(fmt::format("'{}.input' must be an object", at), "messages");
                tool_names[id] = name;
                calls.push_back({{"id", id}, {"type", "function"}, {"function", {{"name", name}, {"arguments", dump(*input)}}}});
            } else if (kind == "tool_result" && !assistant) {
                const std::string id = block_text(block, "tool_use_id", at);
                const Json* result = field(block, "content");
                Json message = {{"role", "tool"}, {"tool_call_id", id}, {"content", result ? result_text(*result, at) : ""}};
                if (const auto it = tool_names.find(id); it != tool_names.end()) message["name"] = it->second;
                results.push_back(std::move(message));
            } else if ((kind == "thinking" || kind == "redacted_thinking") && assistant) {
                continue;
            } else {
                throw ApiError::invalid(fmt::format("'{}' is a '{}' block, which this server does not read in a {} message (text, "
                                                    "tool_use from the assistant, tool_result from the user)",
                                                    at, kind, role->get<std::string>()),
                                        "messages");
            }
        }
        for (auto& r : results) out.push_back(std::move(r));
        if (assistant) {
            Json message = {{"role", "assistant"}, {"content", text}};
            if (!calls.empty()) message["tool_calls"] = std::move(calls);
            out.push_back(std::move(message));
        } else if (!text.empty() || results.empty()) {
            out.push_back({{"role", "user"}, {"content", text}});
        }
    }
    return out;
}

// tool_choice {type: auto | any | tool (name) | none, disable_parallel_tool_use} into chat's fields
void tool_choice_into(const Json& choice, Json& chat) {
    const Json* type = choice.is_object() ? field(choice, "type") : nullptr;
    if (!type || !type->is_string()) throw ApiError::invalid("'tool_choice' must be an object with a 'type'", "tool_choice");
    const std::string kind = type->get<std::string>();
    if (kind == "auto") chat["tool_choice"] = "auto";
    else if (kind == "any") chat["tool_choice"] = "required";
    else if (kind == "none") chat["tool_choice"] = "none";
    else if (kind == "tool") {
        const Json* name = field(choice, "name");
        if (!name || !name->is_string()) throw ApiError::invalid("'tool_choice.name' must be a string", "tool_choice");
        chat["tool_choice"] = {{"type", "function"}, {"function", {{"name", *name}}}};
    } else {
        throw ApiError::invalid(fmt::format("'tool_choice.type' must be auto, any, tool or none, got '{}'", kind), "tool_choice");
    }
    if (get_bool(choice, "disable_parallel_tool_use", false)) chat["parallel_tool_calls"] = false;
}

// What chat says of its own fields, said of the Messages ones they came from.
ApiError in_messages_terms(const ApiError& e) {
    static const std::pair<std::string_view, std::string_view> kNames[] = {{"max_completion_tokens", "max_tokens"},
                                                                          {"'stop'", "'stop_sequences'"}};
    std::string message = e.what();
    std::string param = e.param();
    for (const auto& [chat, ours] : kNames) {
        for (size_t at = 0; (at = message.find(chat, at)) != std::string::npos; at += ours.size()) message.replace(at, chat.size(), ours);
    }
    if (param == "max_completion_tokens") param = "max_tokens";
    if (param == "stop") param = "stop_sequences";
    if (param == "response_format") param = "output_config";
    return ApiError(e.status(), e.type(), message, param, e.code());
}

}  // namespace

std::vector<GenerationRequest> parse_messages_request(std::string_view body, const ServedModel& model) {
    return parse_messages_json(parse_body(body), model);
}

std::vector<GenerationRequest> parse_messages_json(const Json& j, const ServedModel& model) {
    for (const char* name : {"mcp_servers", "container"}) {
        if (field(j, name)) throw ApiError::invalid(fmt::format("'{}' is not offered: this server runs no tools of its own", name), name);
    }
    const Json* max_tokens = field(j, "max_tokens");
    if (!max_tokens) throw ApiError::invalid("'max_tokens' is required", "max_tokens");
    Json chat = {{"messages", chat_messages_of(j)}, {"max_completion_tokens", *max_tokens}};
    for (const char* name : {"model", "temperature", "top_p", "top_k", "stream", "seed", "min_p", "repetition_penalty",
                             "ignore_eos", "min_tokens", "chat_template_kwargs", "priority"}) {
        if (const auto it = j.find(name); it != j.end()) chat[name] = *it;
    }
    if (const Json* t = field(j, "temperature"); t && t->is_number() && t->get<double>() > 1.0) {
        throw ApiError::invalid(fmt::format("'temperature' must be between 0 and 1, got {}", t->dump()), "temperature");
    }
    if (const Json* s = field(j, "stop_sequences")) chat["stop"] = *s;
    if (const Json* t = field(j, "tools")) {
        chat["tools"] = chat_function_tools(*t, "custom", true, "input_schema", "client tools only (name, description, input_schema)");
    }
    if (const Json* c = field(j, "tool_choice")) tool_choice_into(*c, chat);
    if (const Json* md = field(j, "metadata")) {
        if (!md->is_object()) throw ApiError::invalid("'metadata' must be an object", "metadata");
        if (const Json* user = field(*md, "user_id")) chat["user"] = *user;
    }
    if (const Json* oc = field(j, "output_config")) {
        if (!oc->is_object()) throw ApiError::invalid("'output_config' must be an object", "output_config");
        if (const Json* format = field(*oc, "format")) {
            const Json* type = format->is_object() ? field(*format, "type") : nullptr;
            const Json* schema = format->is_object() ? field(*format, "schema") : nullptr;
            if (!type || *type != "json_schema" || !schema) {
                throw ApiError::invalid("'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}", "output_config");
            }
            chat["response_format"] = {{"type", "json_schema"}, {"json_schema", {{"name", "output"}, {"schema", *schema}}}};
        }
        if (const Json* effort = field(*oc, "effort")) {
            // (as the Responses API's reasoning.effort: the template gets it)
            if (!chat.contains("chat_template_kwargs")) chat["chat_template_kwargs"] = Json::object();
            if (chat["chat_template_kwargs"].is_object()) chat["chat_template_kwargs"]["reasoning_effort"] = *effort;
        }
    }
    if (const Json* thinking = field(j, "thinking")) {
        // a reasoning model thinks or not as its template is told (Qwen3's enable_thinking), its
        // thoughts cut at budget_tokens (vLLM's thinking_token_budget); a model that does not
        // reason has no thoughts to bound
        const Json* type = thinking->is_object() ? field(*thinking, "type") : nullptr;
        if (!type || (*type != "enabled" && *type != "disabled")) {
            throw ApiError::invalid("'thinking.type' must be \"enabled\" or \"disabled\"", "thinking");
        }
        if (!chat.contains("chat_template_kwargs")) chat["chat_template_kwargs"] = Json::object();
        if (!chat["chat_template_kwargs"].is_object()) throw ApiError::invalid("'chat_template_kwargs' must be an object", "chat_template_kwargs");
        chat["chat_template_kwargs"]["enable_thinking"] = *type == "enabled";
        if (*type == "enabled" && field(*thinking, "budget_tokens")) {
            const int64_t budget = get_int(*thinking, "budget_tokens", 0, INT32_MAX, 0);
            if (model.reasons) chat["thinking_token_budget"] = budget;
        }
    }
    try {
        return parse_chat_request(dump(chat), model);
    } catch (const ApiError& e) {
        throw in_messages_terms(e);
    }
}

std::string anthropic_error_body(const ApiError& e) {
    const int s = e.status();
    const char* type = s == 401   ? "authentication_error"
                       : s == 403 ? "permission_error"
                       : s == 404 ? "not_found_error"
                       : s == 408 ? "timeout_error"
                       : s == 413 ? "request_too_large"
                       : s == 429 ? "rate_limit_error"
                       : s == 503 ? "overloaded_error"
                       : s >= 500 ? "api_error"
                                  : "invalid_request_error";
    return dump({{"type", "error"}, {"error", {{"type", type}, {"message", e.what()}}}});
}

MessagesOutput::MessagesOutput(std::string model, int64_t prompt_tokens)
    : model_(std::move(model)), prompt_tokens_(prompt_tokens), id_(object_id("msg_")) {}

std::string MessagesOutput::event(const Json& body) const {
    return fmt::format("event: {}\ndata: {}\n\n", body["type"].get<std::string>(), dump(body));
}

// Anthropic's input_tokens are those not read from a cache; cache_read_input_tokens the others.
Json MessagesOutput::usage_json(const Usage& u) {
    return {{"input_tokens", u.prompt - u.cached},
            {"cache_creation_input_tokens", 0},
            {"cache_read_input_tokens", u.cached},
            {"output_tokens", u.completion}};
}

void MessagesOutput::stop_reason(const std::string& finish, const std::string& stop_string) {
    stop_reason_ = finish == "length"       ? "max_tokens"
                   : finish == "tool_calls" ? "tool_use"
                   : !stop_string.empty()   ? "stop_sequence"
                                            : "end_turn";
    stop_sequence_ = stop_string.empty() ? Json(nullptr) : Json(stop_string);
}

Json MessagesOutput::tool_use(const Json& call) {
    // (the call's arguments as the model wrote them; an object is what Anthropic sends, so text
    // that is not one, such as a call cut by max_tokens, gives an empty input)
    const std::string args = call["function"]["arguments"].get<std::string>();
    Json input = nests_deeper_than(args, 64) ? Json() : Json::parse(args, nullptr, false);
    if (!input.is_object()) input = Json::object();
    return {{"type", "tool_use"}, {"id", call["id"]}, {"name", call["function"]["name"]}, {"input", std::move(input)}};
}

std::string MessagesOutput::start() {
    Json message = {{"id", id_},     {"type", "message"},        {"role", "assistant"},         {"model", model_},
                    {"content", Json::array()}, {"stop_reason", nullptr}, {"stop_sequence", nullptr},
                    {"usage", usage_json({prompt_tokens_, 0, 0})}};
    return event({{"type", "message_start"}, {"message", std::move(message)}});
}

std::string MessagesOutput::open(Open kind) {
    std::string out = close();
    open_ = kind;
    ++index_;
    const Json block = kind == Open::thinking ? Json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}}
                                              : Json{{"type", "text"}, {"text", ""}};
    return out + event({{"type", "content_block_start"}, {"index", index_}, {"content_block", block}});
}

std::string MessagesOutput::close() {
    if (open_ == Open::none) return {};
    open_ = Open::none;
    return event({{"type", "content_block_stop"}, {"index", index_}});
}

std::string MessagesOutput::delta(const Json& delta, const std::string& finish, const std::string& stop_string) {
    std::string out;
    auto text = [&](const char* name, Open kind, const char* type, const char* key) {
        const auto it = delta.find(name);
        if (it == delta.end() || !it->is_string() || it->get<std::string>().empty()) return;
        if (open_ != kind) out += open(kind);
        out += event({{"type", "content_block_delta"}, {"index", index_}, {"delta", {{"type", type}, {key, *it}}}});
    };
    text("reasoning_content", Open::thinking, "thinking_delta", "thinking");
    text("content", Open::text, "text_delta", "text");
    // a call's first piece opens its tool_use block; the arguments stream as input_json_delta
    if (const auto it = delta.find("tool_calls"); it != delta.end() && it->is_array()) {
        for (const Json& piece : *it) {
            if (piece.contains("id")) {
                out += close();
                open_ = Open::tool_use;
                ++index_;
                const Json block = {{"type", "tool_use"}, {"id", piece["id"]}, {"name", piece["function"]["name"]}, {"input", Json::object()}};
                out += event({{"type", "content_block_start"}, {"index", index_}, {"content_block", block}});
            }
            const std::string args = piece["function"]["arguments"].get<std::string>();
            if (open_ != Open::tool_use || args.empty()) continue;
            out += event({{"type", "content_block_delta"}, {"index", index_}, {"delta", {{"type", "input_json_delta"}, {"partial_json", args}}}});
        }
    }
    if (!finish.empty()) {
        out += close();
        stop_reason(finish, stop_string);
    }
    return out;
}

std::string MessagesOutput::end(const Usage& usage) {
    std::string out = close();
    out += event({{"type", "message_delta"},
                  {"delta", {{"stop_reason", stop_reason_}, {"stop_sequence", stop_sequence_}}},
                  {"usage", usage_json(usage)}});
    return out + event({{"type", "message_stop"}});
}

std::string MessagesOutput::error(const ApiError& e) { return "event: error\ndata: " + anthropic_error_body(e) + "\n\n"; }

Json MessagesOutput::whole(const Json& message, const std::string& finish, const std::string& stop_string, const Usage& usage) {
    stop_reason(finish, stop_string);
    Json content = Json::array();
    if (const auto it = message.find("reasoning_content"); it != message.end() && it->is_string() && !it->get<std::string>().empty()) {
        content.push_back({{"type", "thinking"}, {"thinking", *it}, {"signature", ""}});
    }
    if (const auto it = message.find("content"); it != message.end() && it->is_string() && !it->get<std::string>().empty()) {
        content.push_back({{"type", "text"}, {"text", *it}});
    }
    if (const auto it = message.find("tool_calls"); it != message.end() && it->is_array()) {
        for (const Json& call : *it) content.push_back(tool_use(call));
    }
    return {{"id", id_},
            {"type", "message"},
            {"role", "assistant"},
            {"model", model_},
            {"content", std::move(content)},
            {"stop_reason", stop_reason_},
            {"stop_sequence", stop_sequence_},
            {"usage", usage_json(usage)}};
}

}  // namespace tps::serve
