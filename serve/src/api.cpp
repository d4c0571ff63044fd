// The endpoints (api.h). Routing is a table of paths and the methods each allows: an unknown path
// is 404, a known one with the wrong method 405 with Allow.
#include "tpserve/serve/api.h"
#include "request_fields.h"
#include "tpserve/serve/messages_api.h"
#include "tpserve/serve/responses_api.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>

namespace tps::serve {
namespace {

// A path segment with its %XX escapes decoded (a model id such as "org/name" arrives as
// "org%2Fname"); nullopt when an escape is malformed.
std::optional<std::string> percent_decoded(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size() || !std::isxdigit(static_cast<unsigned char>(s[i + 1])) ||
            !std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            return std::nullopt;
        }
        out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
        i += 2;
    }
    return out;
}

// A query string's fields (?a=1&b=x), %XX decoded; a field without '=' is an empty string.
Json query_fields(std::string_view query) {
    Json out = Json::object();
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const size_t eq = pair.find('=');
        const std::string key = percent_decoded(pair.substr(0, eq)).value_or(std::string(pair.substr(0, eq)));
        const std::string_view value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
        if (!key.empty()) out[key] = percent_decoded(value).value_or(std::string(value));
        query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    }
    return out;
}

// An input item as the store keeps it (and input_items lists it): an id, a type, and a message's
// content as parts, as OpenAI lists them.
Json input_item(Json item) {
    if (!item.is_object()) return item;
    const std::string type = item.value("type", "message");
    item["type"] = type;
    if (!item.contains("id")) {
        item["id"] = object_id(type == "message" ? "msg_" : type == "function_call" ? "fc_" : type == "function_call_output" ? "fco_" : "item_");
    }
    if (type == "message" && item.contains("content") && item["content"].is_string()) {
        const bool said = item.value("role", "") == "assistant";
        item["content"] = Json::array({{{"type", said ? "output_text" : "input_text"}, {"text", item["content"]}}});
    }
    return item;
}

Reply json_reply(int status, const Json& j) {
    Reply r;
    r.status = status;
    r.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return r;
}

enum class Route { page, health, metrics, models, model, plan, completions, chat, responses, stored_response, messages, count_tokens,
                   tokenize, detokenize };

struct RouteEntry {
    std::string_view path;  // ending in '/': a prefix, with the rest of the path an id
    std::string_view methods;  // "GET", or "GET, DELETE"
    Route route;
    bool open = false;       // served without the API key (a page and probes that reveal no model)
    bool anthropic = false;  // errors in Anthropic's shape (its Messages API), not OpenAI's

    bool matches(std::string_view p) const {
        return path.ends_with('/') && path.size() > 1 ? p.starts_with(path) && p.size() > path.size() : p == path;
    }
    bool allows(std::string_view method) const {
        for (std::string_view rest = methods; !rest.empty();) {
            const size_t comma = rest.find(", ");
            if (rest.substr(0, comma) == method) return true;
            rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 2);
        }
        return false;
    }
};

constexpr RouteEntry kRoutes[] = {
    {"/", "GET", Route::page, true},
    {"/health", "GET", Route::health, true},
    {"/metrics", "GET", Route::metrics, true},
    {"/v1/models", "GET", Route::models},
    {"/v1/models/", "GET", Route::model},  // (a prefix: /v1/models/{id}, OpenAI's retrieve)
    {"/v1/plan", "GET", Route::plan},
    {"/v1/completions", "POST", Route::completions},
    {"/v1/chat/completions", "POST", Route::chat},
    {"/v1/responses", "POST", Route::responses},
    {"/v1/responses/", "GET, DELETE", Route::stored_response},  // (/v1/responses/{id}: the store)
    {"/v1/messages", "POST", Route::messages, false, true},  // (Anthropic's)
    {"/v1/messages/count_tokens", "POST", Route::count_tokens, false, true},
    {"/tokenize", "POST", Route::tokenize},
    {"/detokenize", "POST", Route::detokenize},
};

// The entry serving `path` (the last that matches), or null.
const RouteEntry* route_of(std::string_view path) {
    const RouteEntry* found = nullptr;
    for (const auto& r : kRoutes) {
        if (r.matches(path)) found = &r;
    }
    return found;
}

// Whether the endpoint at `target` answers errors in Anthropic's shape.
bool speaks_anthropic(std::string_view target) {
    const RouteEntry* found = route_of(target.substr(0, target.find('?')));
    return found && found->anthropic;
}

}  // namespace

Reply Reply::error_of(const ApiError& e) {
    Reply r;
    r.status = e.status();
    r.body = e.body();
    if (e.status() == 429) r.headers.emplace_back("Retry-After", "1");
    r.error = e;
    return r;
}

bool bearer_matches(std::string_view authorization, std::string_view key) {
    constexpr std::string_view kScheme = "bearer ";
    if (authorization.size() < kScheme.size()) return false;
    for (size_t i = 0; i < kScheme.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) return false;
    }
    std::string_view given = authorization.substr(kScheme.size());
    while (!given.empty() && (given.front() == ' ' || given.front() == '\t')) given.remove_prefix(1);
    while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) given.remove_suffix(1);
    // every byte of the key is compared, whatever the first difference (no timing hint)
    unsigned char diff = given.size() == key.size() ? 0 : 1;
    for (size_t i = 0; i < key.size(); ++i) {
        diff |= static_cast<unsigned char>(key[i] ^ (i < given.size() ? given[i] : 0));
    }
    return diff == 0;
}

Api::Api(ServeMetrics& metrics, std::string api_key, size_t responses_store_bytes)
    : m_(metrics), api_key_(std::move(api_key)), store_(std::make_shared<ResponseStore>(responses_store_bytes)) {}

void Api::ready(ServedModel model, Scheduler& scheduler, std::function<std::string()> plan_json) {
    model_ = std::move(model);
    plan_json_ = std::move(plan_json);
    {
        std::lock_guard lock(scheduler_mu_);
        scheduler_ = &scheduler;
    }
    state_.store(stop_asked_ ? State::stopping : State::ready, std::memory_order_release);
}

void Api::stopping() {
    stop_asked_ = true;
    if (state_.load() == State::ready) state_.store(State::stopping, std::memory_order_release);
}

void Api::detach() {
    stopping();
    std::lock_guard lock(scheduler_mu_);
    scheduler_ = nullptr;
}

Reply Api::handle(std::string_view method, std::string_view target, std::string_view body, std::string_view authorization) {
    Reply r = route(method, target, body, authorization);
    if (r.error && speaks_anthropic(target)) r.body = anthropic_error_body(*r.error);
    return r;
}

Reply Api::error_at(std::string_view target, const ApiError& e) {
    Reply r = Reply::error_of(e);
    if (speaks_anthropic(target)) r.body = anthropic_error_body(e);
    return r;
}

Reply Api::route(std::string_view method, std::string_view target, std::string_view body, std::string_view authorization) {
    const std::string_view path = target.substr(0, target.find('?'));
    const RouteEntry* found = route_of(path);
    if (!found) {
        m_.rejected_invalid.inc();
        return Reply::error_of(ApiError::not_found(fmt::format("no endpoint at '{}' (see docs/api.md)", path)));
    }
    if (!found->allows(method)) {
        Reply r = Reply::error_of(ApiError(405, "invalid_request_error",
                                        fmt::format("{} takes {}, not {}", path, found->methods, method)));
        r.headers.emplace_back("Allow", std::string(found->methods));
        return r;
    }
    if (!api_key_.empty() && !found->open && !bearer_matches(authorization, api_key_)) {
        m_.rejected_unauthorized.inc();
        Reply r = Reply::error_of(ApiError(401, "invalid_request_error",
                                        authorization.empty() ? "this server needs an API key: send 'Authorization: Bearer <key>'"
                                                              : "the API key sent is not this server's",
                                        "", "invalid_api_key"));
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
    }
    const State state = state_.load(std::memory_order_acquire);
    try {
        switch (found->route) {
            case Route::page: {
                Reply r;
                r.content_type = "text/html; charset=utf-8";
                r.body = std::string(chat_page());
                return r;
            }
            case Route::health:
                return state == State::ready ? json_reply(200, {{"status", "ok"}})
                                             : json_reply(503, {{"status", state == State::loading ? "loading" : "stopping"}});
            case Route::metrics: {
                Reply r;
                r.content_type = "text/plain; version=0.0.4; charset=utf-8";
                r.body = m_.registry.render();
                return r;
            }
            default:
                break;
        }
        if (state == State::loading) {
            m_.rejected_unavailable.inc();
            return Reply::error_of(ApiError::unavailable("the model is still loading; GET /health says when it is ready"));
        }
        switch (found->route) {
            case Route::models:
                return models();
            case Route::model: {
                const std::string_view raw = path.substr(std::string_view("/v1/models/").size());
                const std::optional<std::string> id = percent_decoded(raw);
                if (!id || !model_.answers_to(*id)) {
                    throw ApiError::not_found(fmt::format("the model '{}' does not exist; this server serves '{}'", raw, model_.name),
                                              "model_not_found");
                }
                return json_reply(200, model_json(*id));
            }
            case Route::plan: {
                Reply r;
                r.body = plan_json_();
                return r;
            }
            case Route::completions:
                return generation(Wire::completions, body);
            case Route::chat:
                return generation(Wire::chat, body);
            case Route::responses:
                return generation(Wire::responses, body);
            case Route::messages:
                return generation(Wire::messages, body);
            case Route::count_tokens: {
                // (the request as /v1/messages takes it, max_tokens not needed to count)
                Json j = parse_body(body);
                if (j.is_object() && !j.contains("max_tokens")) j["max_tokens"] = 1;
                const auto counted = parse_messages_json(j, model_);
                return json_reply(200, {{"input_tokens", counted.at(0).prompt.size()}});
            }
            case Route::stored_response:
                return stored_response(method, path.substr(std::string_view("/v1/responses/").size()),
                                       target.size() > path.size() ? target.substr(path.size() + 1) : std::string_view());
            case Route::tokenize: {
                const std::vector<int32_t> tokens = parse_tokenize_request(body, model_);
                return json_reply(200, {{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", model_.context}});
            }
            case Route::detokenize: {
                const std::vector<int32_t> tokens = parse_detokenize_request(body, model_);
                return json_reply(200, {{"prompt", model_.tokenizer->decode(tokens, false)}});
            }
            default:
                break;
        }
        return Reply::error_of(ApiError(500, "internal_error", "unrouted endpoint"));
    } catch (const ApiError& e) {
        m_.rejected_invalid.inc();
        return Reply::error_of(e);
    } catch (const Error& e) {
        // a tokenizer or template error on this request's input: the request is at fault
        m_.rejected_invalid.inc();
        return Reply::error_of(ApiError::invalid(e.what()));
    } catch (const std::exception& e) {
        // out of memory, or a bug: this request fails, the server goes on
        return Reply::error_of(ApiError(500, "internal_error", fmt::format("the server failed on this request: {}", e.what())));
    }
}

Json Api::model_json(const std::string& id) const {
    return {{"id", id}, {"object", "model"}, {"created", model_.created}, {"owned_by", "tpserve"},
            {"max_model_len", model_.context}};
}

// The served model under each of its names (the first its own), as vLLM lists them.
Reply Api::models() const {
    Json data = Json::array({model_json(model_.name)});
    for (const std::string& alias : model_.aliases) data.push_back(model_json(alias));
    return json_reply(200, {{"object", "list"}, {"data", std::move(data)}});
}

Reply Api::generation(Wire wire, std::string_view body) {
    if (state_.load(std::memory_order_acquire) != State::ready) {
        m_.rejected_unavailable.inc();
        return Reply::error_of(ApiError::unavailable("the server is shutting down"));
    }
    std::vector<GenerationRequest> choices;
    std::optional<ResponsesRequest> responses;  // (what else a Responses request brings)
    switch (wire) {
        case Wire::completions: choices = parse_completion_request(body, model_); break;
        case Wire::chat: choices = parse_chat_request(body, model_); break;
        case Wire::responses:
            responses = parse_responses_request(body, model_, store_.get());
            choices = std::move(responses->choices);
            break;
        case Wire::messages: choices = parse_messages_request(body, model_); break;
    }
    Reply r;
    for (auto& c : choices) r.jobs.push_back(std::make_shared<Job>(std::move(c)));
    // (the answer names the model as the request did, as vLLM's)
    const GenerationRequest& first = r.jobs.front()->request();
    const std::string& name = first.model.empty() ? model_.name : first.model;
    r.writer = std::make_shared<ResponseWriter>(first, name, *model_.tokenizer, model_.created, model_.tool_parser);
    if (wire == Wire::messages) {
        r.writer->speak(std::make_unique<MessagesOutput>(name, static_cast<int64_t>(first.prompt.size())));
    }
    if (responses) {
        std::function<void(const Json&)> keep;
        if (responses->store) {
            // the conversation so far, and what this response adds to it
            keep = [this, history = std::move(responses->history), own = responses->inherited](const Json& response) {
                Json all = history;
                for (size_t i = own; i < all.size(); ++i) all[i] = input_item(all[i]);
                for (const Json& item : response["output"]) all.push_back(item);
                store_->put(response["id"].get<std::string>(), {response, std::move(all), own});
                store_gauges();
            };
        }
        auto output = std::make_unique<ResponsesOutput>(std::move(responses->shown), name);
        output->on_done = std::move(keep);
        r.writer->speak(std::move(output));
    }
    return r;
}

void Api::store_gauges() {
    m_.stored_responses.set(static_cast<double>(store_->size()));
    m_.stored_response_bytes.set(static_cast<double>(store_->bytes()));
}

Reply Api::stored_response(std::string_view method, std::string_view rest, std::string_view query) {
    const size_t slash = rest.find('/');
    const std::string_view raw = rest.substr(0, slash);
    const std::string_view sub = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    const std::string id = percent_decoded(raw).value_or(std::string(raw));
    if (!sub.empty() && (sub != "input_items" || method != "GET")) {
        throw ApiError::not_found(fmt::format("no endpoint at '/v1/responses/{}' (see docs/api.md)", rest));
    }
    if (method == "DELETE") {
        if (!store_->erase(id)) throw ApiError::not_found(fmt::format("no stored response '{}'", id), "not_found");
        store_gauges();
        return json_reply(200, {{"id", id}, {"object", "response"}, {"deleted", true}});
    }
    const std::optional<ResponseStore::Entry> kept = store_->get(id);
    if (!kept) {
        throw ApiError::not_found(fmt::format("no stored response '{}' (made with store false, deleted, or evicted: the store "
                                              "keeps the last {} MiB)",
                                              id, store_->max_bytes() >> 20),
                                  "not_found");
    }
    if (sub.empty()) return json_reply(200, kept->response);
    // GET /v1/responses/{id}/input_items: this response's own input items, as OpenAI lists them
    // (order desc by default; limit 1-100, default 20; after an item id)
    const Json q = query_fields(query);
    const std::string order = q.value("order", "desc");
    if (order != "asc" && order != "desc") throw ApiError::invalid("'order' must be asc or desc", "order");
    int64_t limit = 20;
    if (q.contains("limit")) {
        const std::string v = q["limit"].get<std::string>();
        limit = v.empty() || v.size() > 3 || v.find_first_not_of("0123456789") != std::string::npos ? 0 : std::stoll(v);
        if (limit < 1 || limit > 100) throw ApiError::invalid("'limit' must be between 1 and 100", "limit");
    }
    const size_t outputs = kept->response["output"].size();
    const Json& h = kept->history;
    std::vector<const Json*> items;
    for (size_t i = kept->own_input; i + outputs < h.size(); ++i) items.push_back(&h[i]);
    if (order == "desc") std::reverse(items.begin(), items.end());
    size_t from = 0;
    if (q.contains("after")) {
        const std::string after = q["after"].get<std::string>();
        const auto it = std::find_if(items.begin(), items.end(), [&](const Json* item) { return item->value("id", "") == after; });
        if (it == items.end()) throw ApiError::invalid(fmt::format("'after': no input item '{}' in this response", after), "after");
        from = static_cast<size_t>(it - items.begin()) + 1;
    }
    Json data = Json::array();
    for (size_t i = from; i < items.size() && static_cast<int64_t>(data.size()) < limit; ++i) data.push_back(*items[i]);
    const bool more = from + data.size() < items.size();
    return json_reply(200, {{"object", "list"},
                            {"data", data},
                            {"first_id", data.empty() ? Json(nullptr) : data.front()["id"]},
                            {"last_id", data.empty() ? Json(nullptr) : data.back()["id"]},
                            {"has_more", more}});
}

std::optional<Reply> Api::submit(const std::vector<std::shared_ptr<Job>>& jobs) {
    std::unique_lock lock(scheduler_mu_);
    if (!scheduler_) {
        lock.unlock();
        m_.rejected_unavailable.inc();
        return Reply::error_of(ApiError::unavailable("the server is shutting down"));
    }
    const Scheduler::Admission admission = scheduler_->submit(jobs);
    const int64_t most = scheduler_->most_at_once();
    lock.unlock();
    switch (admission) {
        case Scheduler::Admission::accepted:
            return std::nullopt;
        case Scheduler::Admission::queue_full:
            m_.rejected_queue_full.inc();
            return Reply::error_of(ApiError(429, "rate_limit_error", "the server's queue is full; retry after a moment"));
        case Scheduler::Admission::too_many:
            m_.rejected_invalid.inc();
            return Reply::error_of(ApiError::invalid(fmt::format("the request's {} choices are more than the server takes at once "
                                                              "({}: --max-batch plus --max-queue)",
                                                              jobs.size(), most),
                                                  jobs.front()->request().n > 1 ? "n" : "prompt"));
        case Scheduler::Admission::stopping:
            break;
    }
    m_.rejected_unavailable.inc();
    return Reply::error_of(ApiError::unavailable("the server is shutting down"));
}

void Api::cancelled(const std::vector<std::shared_ptr<Job>>& jobs) {
    for (const auto& job : jobs) job->cancel();
    std::lock_guard lock(scheduler_mu_);
    if (scheduler_) scheduler_->wake();
}

}  // namespace tps::serve
