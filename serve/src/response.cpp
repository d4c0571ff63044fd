// The OpenAI response objects (response.h).
#include "tpserve/serve/response.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <random>

namespace tps::serve {
namespace {

using Json = nlohmann::ordered_json;

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

// "cmpl-" + 24 hex digits: unique within the process, unguessable across restarts
std::string make_id(Endpoint e) {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t salt = std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
    const uint64_t n = counter.fetch_add(1);
    return fmt::format("{}-{:016x}{:08x}", e == Endpoint::chat ? "chatcmpl" : "cmpl", salt ^ (n * 0x9E3779B97F4A7C15ull),
                       static_cast<uint32_t>(n));
}

int64_t code_points(const std::string& s) {
    int64_t n = 0;
    for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

Json bytes_of(const std::string& s) {
    Json b = Json::array();
    for (const char c : s) b.push_back(static_cast<unsigned char>(c));
    return b;
}

Json usage(int64_t prompt, int64_t completion, int64_t cached) {
    return {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion},
            {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

}  // namespace

ResponseWriter::ResponseWriter(const GenerationRequest& request, std::string model_name, const Tokenizer& tokenizer,
                               int64_t created)
    : req_(request), model_(std::move(model_name)), tok_(tokenizer), created_(created), id_(make_id(request.endpoint)) {}

std::string ResponseWriter::token_text(int32_t id) const {
    const int32_t one[] = {id};
    return tok_.decode(one, false);
}

std::string ResponseWriter::event(const std::string& json) const { return "data: " + json + "\n\n"; }

// Appends the tokens' log-probabilities to `into`: the completions object (tokens, token_logprobs,
// top_logprobs, text_offset) or the chat list ({token, logprob, bytes, top_logprobs}).
void ResponseWriter::add_logprobs(const std::vector<TokenOut>& tokens, void* into) {
    Json& lp = *static_cast<Json*>(into);
    for (const auto& t : tokens) {
        const std::string text = token_text(t.token);
        if (req_.endpoint == Endpoint::completions) {
            Json top = Json::object();
            for (const auto& alt : t.top) top[token_text(alt.token)] = alt.logprob;
            lp["tokens"].push_back(text);
            lp["token_logprobs"].push_back(t.logprob);
            lp["top_logprobs"].push_back(std::move(top));
            lp["text_offset"].push_back(text_offset_);
            text_offset_ += code_points(text);
        } else {
            Json top = Json::array();
            for (const auto& alt : t.top) {
                const std::string alt_text = token_text(alt.token);
                top.push_back({{"token", alt_text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt_text)}});
            }
            lp["content"].push_back({{"token", text}, {"logprob", t.logprob}, {"bytes", bytes_of(text)}, {"top_logprobs", top}});
        }
    }
}

std::string ResponseWriter::stream_start() const {
    if (req_.endpoint != Endpoint::chat) return {};
    const Json chunk = {{"id", id_},
                        {"object", "chat.completion.chunk"},
                        {"created", created_},
                        {"model", model_},
                        {"choices", Json::array({{{"index", 0},
                                                  {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                  {"logprobs", nullptr},
                                                  {"finish_reason", nullptr}}})}};
    return event(dump(chunk));
}

std::string ResponseWriter::stream_piece(const Delta& d) {
    Json choice = {{"index", 0}};
    Json logprobs = nullptr;
    if (req_.logprobs >= 0 && !d.tokens.empty()) {
        logprobs = req_.endpoint == Endpoint::completions
                       ? Json{{"tokens", Json::array()}, {"token_logprobs", Json::array()}, {"top_logprobs", Json::array()}, {"text_offset", Json::array()}}
                       : Json{{"content", Json::array()}};
        add_logprobs(d.tokens, &logprobs);
    }
    if (req_.endpoint == Endpoint::completions) {
        choice["text"] = d.text;
    } else {
        choice["delta"] = d.text.empty() && !d.finish_reason.empty() ? Json::object() : Json{{"content", d.text}};
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = d.finish_reason.empty() ? Json(nullptr) : Json(d.finish_reason);
    const Json chunk = {{"id", id_},
                        {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created_},
                        {"model", model_},
                        {"choices", Json::array({choice})}};
    return event(dump(chunk));
}

std::string ResponseWriter::stream_end(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) const {
    std::string out;
    if (req_.include_usage) {
        const Json chunk = {{"id", id_},
                            {"object", req_.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion"},
                            {"created", created_},
                            {"model", model_},
                            {"choices", Json::array()},
                            {"usage", usage(prompt_tokens, completion_tokens, cached_tokens)}};
        out += event(dump(chunk));
    }
    out += "data: [DONE]\n\n";
    return out;
}

std::string ResponseWriter::stream_error(const ApiError& e) { return "data: " + e.body() + "\n\ndata: [DONE]\n\n"; }

void ResponseWriter::add(const Delta& d) {
    text_ += d.text;
    tokens_.insert(tokens_.end(), d.tokens.begin(), d.tokens.end());
    if (!d.finish_reason.empty()) finish_reason_ = d.finish_reason;
}

std::string ResponseWriter::whole(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
    Json logprobs = nullptr;
    if (req_.logprobs >= 0) {
        logprobs = req_.endpoint == Endpoint::completions
                       ? Json{{"tokens", Json::array()}, {"token_logprobs", Json::array()}, {"top_logprobs", Json::array()}, {"text_offset", Json::array()}}
                       : Json{{"content", Json::array()}};
        add_logprobs(tokens_, &logprobs);
    }
    Json choice = {{"index", 0}};
    if (req_.endpoint == Endpoint::completions) {
        choice["text"] = text_;
    } else {
        choice["message"] = {{"role", "assistant"}, {"content", text_}};
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = finish_reason_;
    const Json j = {{"id", id_},
                    {"object", req_.endpoint == Endpoint::chat ? "chat.completion" : "text_completion"},
                    {"created", created_},
                    {"model", model_},
                    {"choices", Json::array({choice})},
                    {"usage", usage(prompt_tokens, completion_tokens, cached_tokens)}};
    return dump(j);
}

}  // namespace tps::serve
