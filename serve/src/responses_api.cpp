// OpenAI's Responses API on the chat pipeline (responses_api.h).
#include "tpserve/serve/responses_api.h"

#include "request_fields.h"
#include "tpserve/serve/response.h"

#include <fmt/format.h>

#include <chrono>
#include <map>
#include <set>

namespace tps::serve {
namespace {

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

std::string string_field(const Json& j, const char* name, const std::string& where) {
    const Json* v = field(j, name);
    if (!v || !v->is_string()) {
        throw ApiError::invalid(fmt::format("'{}.{}' must be a string{}", where, name, v ? fmt::format(", got {}", type_name(*v)) : ""),
                                "input");
    }
    return v->get<std::string>();
}

// A message item's (or a call output's) text: a string, or text parts (input_text, output_text).
std::string item_text(const Json& content, const std::string& where) {
    if (content.is_string()) return content.get<std::string>();
    if (!content.is_array()) {
        throw ApiError::invalid(fmt::format("'{}' must be a string or an array of parts, got {}", where, type_name(content)), "input");
    }
    std::string text;
    for (size_t k = 0; k < content.size(); ++k) {
        const Json& part = content[k];
        const std::string at = fmt::format("{}[{}]", where, k);
        const Json* type = part.is_object() ? field(part, "type") : nullptr;
        if (!type || !type->is_string()) throw ApiError::invalid(fmt::format("'{}' must be an object with a 'type'", at), "input");
        const std::string kind = type->get<std::string>();
        if (kind != "input_text" && kind != "output_text" && kind != "text") {
            throw ApiError::invalid(fmt::format("'{}' is of type '{}': this server reads text parts only (input_text, output_text)", at, kind),
                                    "input");
        }
        text += string_field(part, "text", at);
    }
    return text;
}

// instructions and input as chat messages: a message item as a message (developer as system), a
// function_call as a call of the assistant's turn, a function_call_output as a tool message (with
// the function's name, which some templates print). Earlier reasoning items are left out, as
// templates leave earlier thoughts out.
// `stored`: how many of the items came from a stored response (input[0] is the next one).
Json chat_messages_of(const Json& j, const Json* input, size_t stored) {
    Json messages = Json::array();
    if (const Json* ins = field(j, "instructions")) {
        if (!ins->is_string()) throw ApiError::invalid(fmt::format("'instructions' must be a string, got {}", type_name(*ins)), "instructions");
        messages.push_back({{"role", "system"}, {"content", *ins}});
    }
    std::map<std::string, std::string> call_names;  // call_id -> function name
    bool assistant_turn = false;  // the last message is the assistant's, open to calls
    for (size_t i = 0; i < input->size(); ++i) {
        const Json& item = (*input)[i];
        const std::string where = i < stored ? fmt::format("the stored conversation's item {}", i) : fmt::format("input[{}]", i - stored);
        if (!item.is_object()) throw ApiError::invalid(fmt::format("'{}' must be an object, got {}", where, type_name(item)), "input");
        const Json* type = field(item, "type");
        if (type && !type->is_string()) throw ApiError::invalid(fmt::format("'{}.type' must be a string", where), "input");
        const std::string kind = type ? type->get<std::string>() : "message";
        if (kind == "message") {
            std::string role = string_field(item, "role", where);
            if (role == "developer") role = "system";
            if (role != "user" && role != "assistant" && role != "system") {
                throw ApiError::invalid(fmt::format("'{}.role' must be user, assistant, system or developer, got '{}'", where, role), "input");
            }
            const Json* content = field(item, "content");
            if (!content) throw ApiError::invalid(fmt::format("'{}.content' is required", where), "input");
            messages.push_back({{"role", role}, {"content", item_text(*content, where + ".content")}});
            assistant_turn = role == "assistant";
        } else if (kind == "function_call") {
            const std::string call_id = string_field(item, "call_id", where);
            const std::string name = string_field(item, "name", where);
            Json call = {{"id", call_id},
                         {"type", "function"},
                         {"function", {{"name", name}, {"arguments", string_field(item, "arguments", where)}}}};
            call_names[call_id] = name;
            if (!assistant_turn) {
                messages.push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", Json::array()}});
                assistant_turn = true;
            }
            messages.back()["tool_calls"].push_back(std::move(call));
        } else if (kind == "function_call_output") {
            const std::string call_id = string_field(item, "call_id", where);
            const Json* output = field(item, "output");
            if (!output) throw ApiError::invalid(fmt::format("'{}.output' is required", where), "input");
            Json message = {{"role", "tool"}, {"tool_call_id", call_id}, {"content", item_text(*output, where + ".output")}};
            if (const auto it = call_names.find(call_id); it != call_names.end()) message["name"] = it->second;
            messages.push_back(std::move(message));
            assistant_turn = false;
        } else if (kind != "reasoning") {
            throw ApiError::invalid(fmt::format("'{}.type' '{}' is not supported (message, function_call, function_call_output and "
                                                "reasoning items are; an item_reference is not looked up: use previous_response_id)",
                                                where, kind),
                                    "input");
        }
    }
    return messages;
}

Json chat_tool_choice_of(const Json& v) {
    if (v.is_string()) return v;  // auto, none, required (chat checks them)
    const Json* type = v.is_object() ? field(v, "type") : nullptr;
    if (type && type->is_string() && type->get<std::string>() == "function") {
        const Json* name = field(v, "name");
        if (!name || !name->is_string()) throw ApiError::invalid("'tool_choice.name' must be a string", "tool_choice");
        return {{"type", "function"}, {"function", {{"name", *name}}}};
    }
    throw ApiError::invalid("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                            "tool_choice");
}

// text.format as chat's response_format (null: plain text)
Json response_format_of(const Json& text) {
    if (!text.is_object()) throw ApiError::invalid(fmt::format("'text' must be an object, got {}", type_name(text)), "text");
    if (const Json* v = field(text, "verbosity"); v && *v != "medium") {
        throw ApiError::invalid("'text.verbosity' other than \"medium\" is not offered: the model writes as it writes", "text.verbosity");
    }
    const Json* format = field(text, "format");
    if (!format) return nullptr;
    const Json* type = format->is_object() ? field(*format, "type") : nullptr;
    if (!type || !type->is_string()) throw ApiError::invalid("'text.format' must be an object with a 'type'", "text.format");
    const std::string kind = type->get<std::string>();
    if (kind == "text") return nullptr;
    if (kind == "json_object") return {{"type", "json_object"}};
    if (kind == "json_schema") {
        Json schema = Json::object();
        for (const char* k : {"name", "schema", "strict", "description"}) {
            if (const Json* v = field(*format, k)) schema[k] = *v;
        }
        return {{"type", "json_schema"}, {"json_schema", std::move(schema)}};
    }
    throw ApiError::invalid(fmt::format("'text.format.type' must be text, json_object or json_schema, got '{}'", kind), "text.format");
}

// What chat says of its own fields, said of the Responses ones they came from.
ApiError in_responses_terms(const ApiError& e) {
    static const std::pair<std::string_view, std::string_view> kNames[] = {
        {"max_completion_tokens", "max_output_tokens"}, {"response_format", "text.format"}, {"messages", "input"}};
    std::string message = e.what();
    std::string param = e.param();
    for (const auto& [chat, ours] : kNames) {
        for (size_t at = 0; (at = message.find(chat, at)) != std::string::npos; at += ours.size()) message.replace(at, chat.size(), ours);
        if (param.starts_with(chat)) param = std::string(ours);
    }
    return ApiError(e.status(), e.type(), message, param, e.code());
}

// truncation "auto" (OpenAI's): a conversation that does not fit the context loses its oldest
// turns, each a user message and what answered it, until it fits; the system messages and the
// last turn stay. Turns are dropped as few as will do (found by halving: each try renders the
// chat again).
std::vector<GenerationRequest> chat_that_fits(const Json& chat, const ServedModel& model) {
    const Json& messages = chat["messages"];
    std::vector<size_t> turns;  // where each turn after the first begins
    bool first = true;
    for (size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].value("role", "") != "user") continue;
        if (!first) turns.push_back(i);
        first = false;
    }
    auto without = [&](size_t dropped) {  // the chat without its first `dropped` turns
        if (dropped == 0) return parse_chat_request(dump(chat), model);
        Json shorter = chat;
        Json kept = Json::array();
        const size_t from = turns[dropped - 1];
        for (size_t i = 0; i < messages.size(); ++i) {
            const bool system = messages[i].value("role", "") == "system";
            if (system || i >= from) kept.push_back(messages[i]);
        }
        shorter["messages"] = std::move(kept);
        return parse_chat_request(dump(shorter), model);
    };
    auto fits = [&](size_t dropped, std::vector<GenerationRequest>* out) {
        try {
            auto parsed = without(dropped);
            if (out) *out = std::move(parsed);
            return true;
        } catch (const ApiError& e) {
            if (e.code() != "context_length_exceeded" || dropped == turns.size()) throw;
            return false;
        }
    };
    std::vector<GenerationRequest> out;
    if (fits(0, &out)) return out;
    (void)fits(turns.size(), nullptr);  // (the last turn alone does not fit: that error)
    size_t lo = 0, hi = turns.size();   // lo does not fit, hi does
    while (hi - lo > 1) {
        const size_t mid = lo + (hi - lo) / 2;
        (fits(mid, nullptr) ? hi : lo) = mid;
    }
    fits(hi, &out);
    return out;
}

}  // namespace

// The conversation's items: the stored response's (previous_response_id), then `input` (a string
// is one user message).
Json history_of(const Json& j, ResponseStore* store, size_t& stored) {
    Json items = Json::array();
    if (const Json* prev = field(j, "previous_response_id")) {
        if (!store || !store->enabled()) {
            throw ApiError::invalid("'previous_response_id' is not offered: this server keeps no responses (--responses-store-mib 0); "
                                    "send the whole conversation in 'input'",
                                    "previous_response_id");
        }
        if (!prev->is_string()) throw ApiError::invalid("'previous_response_id' must be a string", "previous_response_id");
        const std::optional<ResponseStore::Entry> kept = store->get(prev->get<std::string>());
        if (!kept) {
            throw ApiError(404, "invalid_request_error",
                           fmt::format("no stored response '{}' (made with store false, deleted, or evicted: the store keeps the "
                                       "last {} MiB)",
                                       prev->get<std::string>(), store->max_bytes() >> 20),
                           "previous_response_id", "not_found");
        }
        items = kept->history;
    }
    stored = items.size();
    const Json* input = field(j, "input");
    if (!input) throw ApiError::invalid("'input' is required", "input");
    if (input->is_string()) {
        items.push_back({{"role", "user"}, {"content", *input}});
    } else if (input->is_array() && !input->empty()) {
        for (const Json& item : *input) items.push_back(item);
    } else {
        throw ApiError::invalid(fmt::format("'input' must be a string or a non-empty array of items, got {}",
                                            input->is_array() ? "an empty array" : type_name(*input)),
                                "input");
    }
    return items;
}

ResponsesRequest parse_responses_request(std::string_view body, const ServedModel& model, ResponseStore* store) {
    const Json j = parse_body(body);
    // what needs state this server does not keep, or work it does not do: refused, never ignored
    for (const char* name : {"conversation", "prompt"}) {
        if (field(j, name)) {
            throw ApiError::invalid(fmt::format("'{}' is not offered: conversation objects and prompt templates are not kept; "
                                                "use previous_response_id, or send the whole conversation in 'input'",
                                                name),
                                    name);
        }
    }
    if (field(j, "max_tool_calls")) {
        throw ApiError::invalid("'max_tool_calls' is not offered: it bounds built-in tools, and this server runs none", "max_tool_calls");
    }
    const bool wants_store = get_bool(j, "store", true);
    if (get_bool(j, "background", false)) throw ApiError::invalid("'background' is not offered: a request is answered while it runs", "background");
    bool logprobs = false;
    if (const Json* inc = field(j, "include")) {
        if (!inc->is_array()) throw ApiError::invalid(fmt::format("'include' must be an array of strings, got {}", type_name(*inc)), "include");
        for (const Json& v : *inc) {
            if (v == "message.output_text.logprobs") {
                logprobs = true;
            } else if (v != "reasoning.encrypted_content") {  // (nothing is encrypted: thoughts come as text)
                throw ApiError::invalid(fmt::format("'include': {} is not offered (only message.output_text.logprobs and "
                                                    "reasoning.encrypted_content: this server runs no tools of its own)",
                                                    v.dump()),
                                        "include");
            }
        }
    }
    const int64_t top_logprobs = get_int(j, "top_logprobs", 0, 20, 0);
    bool truncate = false;
    if (const Json* t = field(j, "truncation")) {
        if (*t != "disabled" && *t != "auto") throw ApiError::invalid("'truncation' must be \"auto\" or \"disabled\"", "truncation");
        truncate = *t == "auto";
    }
    if (const Json* md = field(j, "metadata")) {
        bool ok = md->is_object() && md->size() <= 16;
        if (ok) {
            for (const auto& [k, v] : md->items()) ok = ok && v.is_string() && k.size() <= 64 && v.get<std::string>().size() <= 512;
        }
        if (!ok) throw ApiError::invalid("'metadata' must be an object of at most 16 strings (keys up to 64 characters, values up to 512)", "metadata");
    }

    size_t stored = 0;
    Json history = history_of(j, store, stored);
    Json chat = {{"messages", chat_messages_of(j, &history, stored)}};
    // what chat reads under the same name (vLLM's sampling fields among them)
    static const char* const kSame[] = {"model", "temperature", "top_p", "stream", "user", "seed", "top_k", "min_p",
                                        "repetition_penalty", "presence_penalty", "frequency_penalty", "stop", "stop_token_ids",
                                        "ignore_eos", "min_tokens", "logit_bias", "skip_special_tokens", "bad_words",
                                        "allowed_token_ids", "include_stop_str_in_output", "priority", "parallel_tool_calls",
                                        "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar"};
    for (const char* name : kSame) {
        if (const auto it = j.find(name); it != j.end()) chat[name] = *it;
    }
    if (const Json* v = field(j, "max_output_tokens")) chat["max_completion_tokens"] = *v;
    if (logprobs) {  // (as OpenAI's: top_logprobs alone shows nothing)
        chat["logprobs"] = true;
        chat["top_logprobs"] = top_logprobs;
    }
    if (const Json* v = field(j, "tools")) {
        // (web_search, file_search, mcp, ... run on OpenAI's side)
        chat["tools"] = chat_function_tools(*v, "function", false, "parameters", "function tools only (the client runs them)");
    }
    if (const Json* v = field(j, "tool_choice")) chat["tool_choice"] = chat_tool_choice_of(*v);
    if (const Json* v = field(j, "text")) {
        if (Json format = response_format_of(*v); !format.is_null()) chat["response_format"] = std::move(format);
    }
    Json kwargs = Json::object();
    if (const Json* v = field(j, "chat_template_kwargs")) {
        if (!v->is_object()) throw ApiError::invalid("'chat_template_kwargs' must be an object", "chat_template_kwargs");
        kwargs = *v;
    }
    if (const Json* r = field(j, "reasoning")) {
        if (!r->is_object()) throw ApiError::invalid(fmt::format("'reasoning' must be an object, got {}", type_name(*r)), "reasoning");
        for (const char* name : {"summary", "generate_summary"}) {
            if (field(*r, name)) {
                throw ApiError::invalid(fmt::format("'reasoning.{}' is not offered: a reasoning model's thoughts come whole, as a "
                                                    "reasoning item's text",
                                                    name),
                                        "reasoning");
            }
        }
        // (as vLLM: the template gets it; gpt-oss's reads it, others leave it)
        if (const Json* effort = field(*r, "effort")) kwargs["reasoning_effort"] = *effort;
    }
    if (!kwargs.empty()) chat["chat_template_kwargs"] = std::move(kwargs);

    ResponsesRequest out;
    try {
        out.choices = truncate ? chat_that_fits(chat, model) : parse_chat_request(dump(chat), model);
    } catch (const ApiError& e) {
        throw in_responses_terms(e);
    }

    Json& s = out.shown;
    auto given = [&](const char* name, Json fallback) {
        const Json* v = field(j, name);
        s[name] = v ? *v : std::move(fallback);
    };
    s["instructions"] = field(j, "instructions") ? j["instructions"] : Json(nullptr);
    s["max_output_tokens"] = field(j, "max_output_tokens") ? j["max_output_tokens"] : Json(nullptr);
    s["max_tool_calls"] = nullptr;
    given("metadata", Json::object());
    given("parallel_tool_calls", true);
    s["previous_response_id"] = field(j, "previous_response_id") ? j["previous_response_id"] : Json(nullptr);
    Json reasoning = {{"effort", nullptr}, {"summary", nullptr}};
    if (const Json* r = field(j, "reasoning"); r && field(*r, "effort")) reasoning["effort"] = (*r)["effort"];
    s["reasoning"] = std::move(reasoning);
    out.store = store && store->enabled() && wants_store;
    s["store"] = out.store;  // (false: nothing is kept, the response cannot be retrieved later)
    out.history = std::move(history);
    out.inherited = stored;
    given("temperature", nullptr);
    given("text", Json{{"format", {{"type", "text"}}}});
    given("tool_choice", "auto");
    given("tools", Json::array());
    s["top_logprobs"] = top_logprobs;
    given("top_p", nullptr);
    s["truncation"] = truncate ? "auto" : "disabled";
    given("user", nullptr);
    return out;
}

ResponsesOutput::ResponsesOutput(Json shown, std::string model)
    : shown_(std::move(shown)),
      model_(std::move(model)),
      id_(object_id("resp_")),
      created_(std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count()) {}

std::string ResponsesOutput::status_of(const std::string& finish) { return finish == "length" ? "incomplete" : "completed"; }

Json ResponsesOutput::response(const std::string& status, const Usage* usage) const {
    Json r = {{"id", id_}, {"object", "response"}, {"created_at", created_}, {"status", status}, {"background", false}, {"error", nullptr}};
    r["incomplete_details"] = status == "incomplete" ? Json{{"reason", "max_output_tokens"}} : Json(nullptr);
    for (const auto& [k, v] : shown_.items()) r[k] = v;
    r["model"] = model_;
    r["output"] = output_;
    if (usage) {
        r["usage"] = {{"input_tokens", usage->prompt},
                      {"input_tokens_details", {{"cached_tokens", usage->cached}}},
                      {"output_tokens", usage->completion},
                      {"output_tokens_details", {{"reasoning_tokens", std::max<int64_t>(usage->reasoning, 0)}}},
                      {"total_tokens", usage->prompt + usage->completion}};
    } else {
        r["usage"] = nullptr;
    }
    return r;
}

std::string ResponsesOutput::event(Json body) {
    body["sequence_number"] = sequence_++;
    return fmt::format("event: {}\ndata: {}\n\n", body["type"].get<std::string>(), dump(body));
}

std::string ResponsesOutput::start() {
    std::string out = event({{"type", "response.created"}, {"response", response("in_progress", nullptr)}});
    return out + event({{"type", "response.in_progress"}, {"response", response("in_progress", nullptr)}});
}

std::string ResponsesOutput::open(Open kind) {
    std::string out = close("completed");
    open_ = kind;
    open_text_.clear();
    open_logprobs_ = Json::array();
    const auto index = static_cast<int64_t>(output_.size());
    if (kind == Open::reasoning) {
        open_id_ = object_id("rs_");
        out += event({{"type", "response.output_item.added"},
                      {"output_index", index},
                      {"item", {{"id", open_id_}, {"type", "reasoning"}, {"summary", Json::array()}, {"status", "in_progress"}}}});
        out += event({{"type", "response.content_part.added"},
                      {"item_id", open_id_},
                      {"output_index", index},
                      {"content_index", 0},
                      {"part", {{"type", "reasoning_text"}, {"text", ""}}}});
    } else {
        open_id_ = object_id("msg_");
        out += event({{"type", "response.output_item.added"},
                      {"output_index", index},
                      {"item",
                       {{"id", open_id_}, {"type", "message"}, {"status", "in_progress"}, {"content", Json::array()}, {"role", "assistant"}}}});
        out += event({{"type", "response.content_part.added"},
                      {"item_id", open_id_},
                      {"output_index", index},
                      {"content_index", 0},
                      {"part", {{"type", "output_text"}, {"annotations", Json::array()}, {"logprobs", Json::array()}, {"text", ""}}}});
    }
    return out;
}

std::string ResponsesOutput::close(const std::string& status) {
    if (open_ == Open::none) return {};
    const auto index = static_cast<int64_t>(output_.size());
    if (open_ == Open::call) {
        open_ = Open::none;
        std::string out = event({{"type", "response.function_call_arguments.done"}, {"item_id", open_id_}, {"output_index", index},
                                 {"arguments", open_text_}});
        open_call_["status"] = status;
        open_call_["arguments"] = open_text_;
        out += event({{"type", "response.output_item.done"}, {"output_index", index}, {"item", open_call_}});
        output_.push_back(std::move(open_call_));
        return out;
    }
    const bool thinking = open_ == Open::reasoning;
    open_ = Open::none;
    Json part = thinking ? Json{{"type", "reasoning_text"}, {"text", open_text_}}
                         : Json{{"type", "output_text"}, {"annotations", Json::array()}, {"logprobs", open_logprobs_}, {"text", open_text_}};
    Json done = {{"type", thinking ? "response.reasoning_text.done" : "response.output_text.done"},
                 {"item_id", open_id_},
                 {"output_index", index},
                 {"content_index", 0},
                 {"text", open_text_}};
    if (!thinking) done["logprobs"] = open_logprobs_;
    std::string out = event(std::move(done));
    out += event({{"type", "response.content_part.done"}, {"item_id", open_id_}, {"output_index", index}, {"content_index", 0}, {"part", part}});
    Json item = thinking ? Json{{"id", open_id_}, {"type", "reasoning"}, {"summary", Json::array()}, {"content", Json::array({part})},
                                {"status", status}}
                         : Json{{"id", open_id_}, {"type", "message"}, {"status", status}, {"content", Json::array({part})},
                                {"role", "assistant"}};
    out += event({{"type", "response.output_item.done"}, {"output_index", index}, {"item", item}});
    output_.push_back(std::move(item));
    return out;
}

// Chat's streamed call pieces: a piece with an id opens a function_call item; the arguments of
// every piece go out as they come (closed by the next item or the end).
std::string ResponsesOutput::add_call_pieces(const Json& pieces) {
    std::string out;
    for (const Json& piece : pieces) {
        const auto index = static_cast<int64_t>(output_.size());
        if (piece.contains("id")) {
            out += close("completed");
            open_ = Open::call;
            open_id_ = object_id("fc_");
            open_text_.clear();
            open_call_ = {{"id", open_id_}, {"type", "function_call"}, {"status", "in_progress"}, {"arguments", ""},
                          {"call_id", piece["id"]}, {"name", piece["function"]["name"]}};
            out += event({{"type", "response.output_item.added"}, {"output_index", index}, {"item", open_call_}});
        }
        const std::string args = piece["function"]["arguments"].get<std::string>();
        if (open_ != Open::call || args.empty()) continue;
        open_text_ += args;
        out += event({{"type", "response.function_call_arguments.delta"}, {"item_id", open_id_}, {"output_index", index}, {"delta", args}});
    }
    return out;
}

std::string ResponsesOutput::delta(const Json& delta, const std::string& finish, const std::string& /*stop_string*/) {
    std::string out;
    auto text = [&](const char* name, Open kind, const char* type) {
        const auto it = delta.find(name);
        if (it == delta.end() || !it->is_string() || it->get<std::string>().empty()) return;
        if (open_ != kind) out += open(kind);
        const std::string piece = it->get<std::string>();
        open_text_ += piece;
        Json e = {{"type", type}, {"item_id", open_id_}, {"output_index", static_cast<int64_t>(output_.size())}, {"content_index", 0}, {"delta", piece}};
        if (kind == Open::message) {
            // (the piece's tokens, when asked for; a piece of thoughts brings none here)
            e["logprobs"] = delta.contains("logprobs") ? delta["logprobs"] : Json::array();
            for (const Json& entry : e["logprobs"]) open_logprobs_.push_back(entry);
        }
        out += event(std::move(e));
    };
    text("reasoning_content", Open::reasoning, "response.reasoning_text.delta");
    text("content", Open::message, "response.output_text.delta");
    if (const auto it = delta.find("tool_calls"); it != delta.end() && it->is_array()) out += add_call_pieces(*it);
    if (!finish.empty()) {
        finish_ = finish;
        out += close(status_of(finish));
    }
    return out;
}

std::string ResponsesOutput::end(const Usage& usage) {
    const std::string status = status_of(finish_);
    Json done = response(status, &usage);
    if (on_done) on_done(done);
    return event({{"type", "response." + status}, {"response", std::move(done)}});
}

std::string ResponsesOutput::error(const ApiError& e) {
    std::string out = event({{"type", "error"},
                             {"code", e.code().empty() ? e.type() : e.code()},
                             {"message", e.what()},
                             {"param", e.param().empty() ? Json(nullptr) : Json(e.param())}});
    Json failed = response("failed", nullptr);
    failed["error"] = {{"code", e.code().empty() ? e.type() : e.code()}, {"message", e.what()}};
    return out + event({{"type", "response.failed"}, {"response", std::move(failed)}});
}

Json ResponsesOutput::whole(const Json& message, const std::string& finish, const std::string& /*stop_string*/, const Usage& usage) {
    const std::string status = status_of(finish);
    if (const auto it = message.find("reasoning_content"); it != message.end() && it->is_string() && !it->get<std::string>().empty()) {
        const std::string thoughts = it->get<std::string>();
        // (cut by max_output_tokens before the answer: the thoughts are what is incomplete)
        const bool cut = status == "incomplete" && (!message.contains("content") || message["content"].is_null());
        output_.push_back({{"id", object_id("rs_")},
                           {"type", "reasoning"},
                           {"summary", Json::array()},
                           {"content", Json::array({{{"type", "reasoning_text"}, {"text", thoughts}}})},
                           {"status", cut ? "incomplete" : "completed"}});
    }
    if (const auto it = message.find("content"); it != message.end() && it->is_string() && !it->get<std::string>().empty()) {
        output_.push_back({{"id", object_id("msg_")},
                           {"type", "message"},
                           {"status", status},
                           {"content", Json::array({{{"type", "output_text"}, {"annotations", Json::array()},
                                                     {"logprobs", message.contains("logprobs") ? message["logprobs"] : Json::array()},
                                                     {"text", *it}}})},
                           {"role", "assistant"}});
    }
    if (const auto it = message.find("tool_calls"); it != message.end() && it->is_array()) {
        for (const Json& call : *it) {
            // (the last call is incomplete when the output ended inside its arguments)
            const bool last = &call == &it->back();
            output_.push_back({{"id", object_id("fc_")},
                               {"type", "function_call"},
                               {"status", last ? status : "completed"},
                               {"arguments", call["function"]["arguments"]},
                               {"call_id", call["id"]},
                               {"name", call["function"]["name"]}});
        }
    }
    Json done = response(status, &usage);
    if (on_done) on_done(done);
    return done;
}

}  // namespace tps::serve
