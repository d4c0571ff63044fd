// The OpenAI response objects (response.h).
#include "tpserve/serve/response.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <chrono>
#include <random>
#include <utility>

namespace tps::serve {
namespace {

using Json = nlohmann::ordered_json;

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

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

Json usage_json(const Usage& u) {
    Json j = {{"prompt_tokens", u.prompt},
              {"completion_tokens", u.completion},
              {"total_tokens", u.prompt + u.completion},
              {"prompt_tokens_details", {{"cached_tokens", u.cached}}}};
    if (u.reasoning >= 0) j["completion_tokens_details"] = {{"reasoning_tokens", u.reasoning}};
    return j;
}

// vLLM's stop_reason: the stop string or stop_token_ids token that ended a choice; null for the
// model's own end, the length or a format's end (any finish but "stop")
Json stop_reason_json(const std::string& finish, const std::string& stop_string, int32_t stop_token) {
    if (finish != "stop") return nullptr;
    if (!stop_string.empty()) return stop_string;
    return stop_token >= 0 ? Json(stop_token) : Json(nullptr);
}

// vLLM's usage in each chunk (continuous_usage_stats): the choice's prompt and its output so far
Json chunk_usage_json(int64_t prompt, int64_t completion) {
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

// OpenAI's tool_calls list of a message
Json tool_calls_json(const std::vector<ToolCall>& calls) {
    Json out = Json::array();
    for (const ToolCall& c : calls) {
        out.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    }
    return out;
}

// ... and of a streamed delta: a call's first piece with its id, type and name, later pieces with
// more of its arguments (each piece with the call's index)
Json tool_call_pieces_json(const std::vector<ToolCallPiece>& pieces) {
    Json out = Json::array();
    for (const ToolCallPiece& p : pieces) {
        Json call = {{"index", p.index}};
        if (!p.id.empty()) {
            call["id"] = p.id;
            call["type"] = "function";
            call["function"] = {{"name", p.name}, {"arguments", p.arguments}};
        } else {
            call["function"] = {{"arguments", p.arguments}};
        }
        out.push_back(std::move(call));
    }
    return out;
}

// the log-probabilities object before any token: each endpoint's own shape
Json empty_logprobs(Endpoint e) {
    return e == Endpoint::completions
               ? Json{{"tokens", Json::array()}, {"token_logprobs", Json::array()}, {"top_logprobs", Json::array()}, {"text_offset", Json::array()}}
               : Json{{"content", Json::array()}};
}

}  // namespace

std::string object_id(std::string_view prefix) {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t salt = std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32);
    const uint64_t n = counter.fetch_add(1);
    return fmt::format("{}{:016x}{:08x}", prefix, salt ^ (n * 0x9E3779B97F4A7C15ull), static_cast<uint32_t>(n));
}

ResponseWriter::ResponseWriter(const GenerationRequest& request, std::string model_name, const Tokenizer& tokenizer,
                               int64_t created, ToolParser tools)
    : endpoint_(request.endpoint),
      tools_(request.endpoint != Endpoint::chat ? ToolParser::none
             // a forced list reads as Mistral's where the model is Mistral (its template wants its ids)
             : request.forces_tool_calls ? (tools == ToolParser::mistral ? ToolParser::mistral : ToolParser::json_list)
             : request.reads_tool_calls  ? tools
                                         : ToolParser::none),
      splits_reasoning_(request.endpoint == Endpoint::chat && request.splits_reasoning),
      thinks_(request.thinks),
      include_reasoning_(request.include_reasoning),
      token_ids_as_text_(request.token_ids_as_text),
      one_tool_call_(request.one_tool_call),
      chat_echo_(request.endpoint == Endpoint::chat ? request.chat_echo : std::string()),
      logprobs_(request.logprobs),
      include_usage_(request.include_usage),
      continuous_usage_(request.continuous_usage),
      chat_prompt_tokens_(static_cast<int64_t>(request.prompt.size())),
      model_(std::move(model_name)),
      tok_(tokenizer),
      created_(created),
      id_(object_id(request.endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-")),
      choices_(static_cast<size_t>(std::max(1, request.choices))) {}

std::string ResponseWriter::token_text(int32_t id) const {
    if (token_ids_as_text_) return fmt::format("token_id:{}", id);  // (vLLM's return_tokens_as_token_ids)
    const int32_t one[] = {id};
    return tok_.decode(one, false);
}

std::string ResponseWriter::event(const std::string& json) const { return "data: " + json + "\n\n"; }

ResponseWriter::Choice& ResponseWriter::choice(int index) {
    TPS_CHECK(index >= 0 && static_cast<size_t>(index) < choices_.size(), "response: choice {} of {}", index, choices_.size());
    return choices_[static_cast<size_t>(index)];
}

// Appends the tokens' log-probabilities to `into`: the completions object (tokens, token_logprobs,
// top_logprobs, text_offset) or the chat list ({token, logprob, bytes, top_logprobs}).
void ResponseWriter::add_logprobs(const std::vector<TokenOut>& tokens, Choice& c, void* into) {
    Json& lp = *static_cast<Json*>(into);
    for (const auto& t : tokens) {
        const std::string text = token_text(t.token);
        if (endpoint_ == Endpoint::completions) {
            // (an echoed prompt's first token has no log-probability: null, as OpenAI)
            const bool none = std::isnan(t.logprob);
            Json top = none ? Json(nullptr) : Json::object();
            // (keyed by text: tokens that read the same, such as byte tokens shown as U+FFFD, keep
            // the most likely one's value)
            for (const auto& alt : t.top) {
                const std::string key = token_text(alt.token);
                if (!top.contains(key)) top[key] = alt.logprob;
            }
            lp["tokens"].push_back(text);
            lp["token_logprobs"].push_back(none ? Json(nullptr) : Json(t.logprob));
            lp["top_logprobs"].push_back(std::move(top));
            lp["text_offset"].push_back(c.text_offset);
            c.text_offset += code_points(text);
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

void ResponseWriter::speak(std::unique_ptr<WireOutput> wire) {
    TPS_CHECK(endpoint_ == Endpoint::chat && choices_.size() == 1, "response: another API's answer is one chat choice");
    wire_ = std::move(wire);
}

std::string ResponseWriter::error_body(const ApiError& e) const { return wire_ ? wire_->error_body(e) : e.body(); }

std::string ResponseWriter::stream_start() {
    if (wire_) return wire_->start();
    if (endpoint_ != Endpoint::chat) return {};
    std::string out;
    if (continuous_usage_) chunk_usage_ = chunk_usage_json(chat_prompt_tokens_, 0);
    for (size_t i = 0; i < choices_.size(); ++i) {
        out += chunk(static_cast<int>(i), Json{{"role", "assistant"}, {"content", ""}}, nullptr, {});
    }
    return out;
}

// The object around the choices: id, object, created, model, choices (and usage, if given).
Json ResponseWriter::envelope(const char* object, Json choices, const Usage* usage) const {
    Json j = {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}, {"choices", std::move(choices)}};
    if (usage) j["usage"] = usage_json(*usage);
    return j;
}

const char* ResponseWriter::stream_object() const {
    return endpoint_ == Endpoint::chat ? "chat.completion.chunk" : "text_completion";
}

// One chunk of choice `index`: `body` (text or delta), its logprobs, its finish_reason.
std::string ResponseWriter::chunk(int index, Json body, Json logprobs, const std::string& finish) const {
    if (wire_) {
        if (logprobs.is_object()) body["logprobs"] = std::move(logprobs["content"]);
        return wire_->delta(body, finish, finish.empty() ? std::string() : stop_string_);
    }
    Json choice_json = {{"index", index}};
    if (endpoint_ == Endpoint::completions) choice_json["text"] = std::move(body);
    else choice_json["delta"] = std::move(body);
    choice_json["logprobs"] = std::move(logprobs);
    choice_json["finish_reason"] = finish.empty() ? Json(nullptr) : Json(finish);
    if (!finish.empty()) choice_json["stop_reason"] = stop_reason_json(finish, stop_string_, stop_token_);
    Json j = envelope(stream_object(), Json::array({std::move(choice_json)}), nullptr);
    if (!chunk_usage_.is_null()) j["usage"] = chunk_usage_;
    return event(dump(j));
}

std::string ResponseWriter::stream_piece(int index, const Delta& d) {
    Choice& c = choice(index);
    stop_string_ = d.stop_string;
    stop_token_ = d.stop_token;
    if (continuous_usage_) chunk_usage_ = chunk_usage_json(d.prompt_tokens, d.completion_tokens);
    Json logprobs = nullptr;
    if (logprobs_ >= 0 && !d.tokens.empty()) {
        logprobs = empty_logprobs(endpoint_);
        add_logprobs(d.tokens, c, &logprobs);
    }
    if (endpoint_ == Endpoint::completions) return chunk(index, d.text, std::move(logprobs), d.finish_reason);
    // chat's echo first; a reasoning model's thoughts go first, as reasoning_content; the rest is the content
    std::string text = d.text, thought;
    if (!c.started) {
        c.started = true;
        text = chat_echo_ + d.text;
    }
    count_thoughts(c, d.text, d.completion_tokens);
    if (splits_reasoning_) {
        if (!c.thoughts) c.thoughts.emplace(thinks_);
        ReasoningStream::Piece p = c.thoughts->push(text, !d.finish_reason.empty());
        text = std::move(p.content);
        if (include_reasoning_) thought = std::move(p.reasoning);
    }
    auto content = [&thought](const std::string& piece) {
        Json delta = Json::object();
        if (!thought.empty()) delta["reasoning_content"] = std::exchange(thought, {});
        if (!piece.empty() || delta.empty()) delta["content"] = piece;
        return delta;
    };
    if (tools_ == ToolParser::none) {
        if (splits_reasoning_ && text.empty() && thought.empty() && logprobs.is_null() && d.finish_reason.empty()) return {};
        return chunk(index, text.empty() && thought.empty() && !d.finish_reason.empty() ? Json::object() : content(text),
                     std::move(logprobs), d.finish_reason);
    }
    // tools: content, then the pieces of calls this text adds (parallel_tool_calls false: the first only)
    const bool last = !d.finish_reason.empty();
    if (!c.calls) c.calls.emplace(tools_, one_tool_call_);
    ToolStep step = c.calls->push(text, last);
    const std::string finish = !last ? std::string() : c.calls->calls() > 0 && !c.calls->cut() ? "tool_calls" : d.finish_reason;
    std::vector<Json> deltas;
    if (!step.content.empty() || !thought.empty()) deltas.push_back(content(step.content));
    if (!step.calls.empty()) deltas.push_back({{"tool_calls", tool_call_pieces_json(step.calls)}});
    if (deltas.empty()) {
        if (!last && logprobs.is_null()) return {};  // all of it held
        deltas.push_back(last ? Json::object() : content({}));
    }
    std::string out;
    for (size_t k = 0; k < deltas.size(); ++k) {
        out += chunk(index, std::move(deltas[k]), std::exchange(logprobs, nullptr), k + 1 == deltas.size() ? finish : std::string());
    }
    return out;
}

// A reasoning model's thought tokens: the output tokens up to the piece in which </think> comes.
// An output the prompt did not leave thinking has thoughts only if it opens with <think>.
void ResponseWriter::count_thoughts(Choice& c, const std::string& text, int64_t tokens_so_far) {
    c.output_tokens = tokens_so_far;
    if (!splits_reasoning_ || c.thought_tokens >= 0) return;
    if (c.said.empty()) c.said = chat_echo_;  // (the output continues the echo)
    c.said += text;
    if (!thinks_ && !kThinkStart.starts_with(c.said) && !c.said.starts_with(kThinkStart)) {
        c.thought_tokens = 0;
        return;
    }
    const size_t from = c.searched > kThinkEnd.size() ? c.searched - kThinkEnd.size() : 0;
    if (c.said.find(kThinkEnd, from) != std::string::npos) c.thought_tokens = tokens_so_far;
    c.searched = c.said.size();
}

// A choice's thought tokens so far: those up to the end of its thoughts, or all of its output
// while they have not ended (none where the output is not read for thoughts, or holds none).
int64_t ResponseWriter::thought_tokens(const Choice& c) const {
    if (!splits_reasoning_) return 0;
    if (c.thought_tokens >= 0) return c.thought_tokens;
    return thinks_ || c.said.starts_with(kThinkStart) ? c.output_tokens : 0;
}

// The usage with the choices' thought tokens (as OpenAI's reasoning_tokens), where the output is
// read for thoughts.
Usage ResponseWriter::with_reasoning(Usage u) const {
    if (!splits_reasoning_) return u;
    u.reasoning = 0;
    for (const Choice& c : choices_) u.reasoning += thought_tokens(c);
    return u;
}

std::string ResponseWriter::stream_end(const Usage& given) const {
    const Usage usage = with_reasoning(given);
    if (wire_) return wire_->end(usage);
    std::string out;
    if (include_usage_) {
        out += event(dump(envelope(stream_object(), Json::array(), &usage)));
    }
    out += "data: [DONE]\n\n";
    return out;
}

std::string ResponseWriter::stream_error(const ApiError& e) {
    if (wire_) return wire_->error(e);
    return "data: " + e.body() + "\n\ndata: [DONE]\n\n";
}

void ResponseWriter::add(int index, const Delta& d) {
    Choice& c = choice(index);
    c.text += d.text;
    count_thoughts(c, d.text, d.completion_tokens);
    c.tokens.insert(c.tokens.end(), d.tokens.begin(), d.tokens.end());
    if (!d.prompt_logprobs.empty()) c.prompt_logprobs = prompt_logprobs_json(d.prompt_logprobs);
    if (!d.finish_reason.empty()) c.finish_reason = d.finish_reason;
    if (!d.stop_string.empty()) c.stop_string = d.stop_string;
    if (d.stop_token >= 0) c.stop_token = d.stop_token;
}

// vLLM's prompt_logprobs: null for the first token, then for each position an object keyed by
// token id: the prompt's token first, then the alternatives, each {logprob, rank, decoded_token}
// (the alternatives' ranks are their places; a logprob of -inf is -9999, as vLLM clamps it).
Json ResponseWriter::prompt_logprobs_json(const std::vector<TokenOut>& scores) const {
    auto entry = [&](int32_t token, float logprob, int64_t rank) {
        const int32_t one[] = {token};
        return Json{{"logprob", std::isfinite(logprob) ? logprob : -9999.0f}, {"rank", rank}, {"decoded_token", tok_.decode(one, false)}};
    };
    Json out = Json::array();
    for (const TokenOut& t : scores) {
        if (std::isnan(t.logprob)) {
            out.push_back(nullptr);
            continue;
        }
        Json at = Json::object();
        at[std::to_string(t.token)] = entry(t.token, t.logprob, t.rank);
        for (size_t k = 0; k < t.top.size(); ++k) {
            const std::string key = std::to_string(t.top[k].token);
            if (!at.contains(key)) at[key] = entry(t.top[k].token, t.top[k].logprob, static_cast<int64_t>(k) + 1);
        }
        out.push_back(std::move(at));
    }
    return out;
}

std::string ResponseWriter::whole(const Usage& given) {
    const Usage usage = with_reasoning(given);
    Json choices = Json::array();
    for (size_t i = 0; i < choices_.size(); ++i) {
        Choice& c = choices_[i];
        Json logprobs = nullptr;
        if (logprobs_ >= 0) {
            logprobs = empty_logprobs(endpoint_);
            add_logprobs(c.tokens, c, &logprobs);
        }
        Json choice_json = {{"index", i}};
        std::string finish = c.finish_reason;
        if (endpoint_ == Endpoint::completions) {
            choice_json["text"] = c.text;
        } else {
            // a reasoning model's thoughts, then the answer (null if the thoughts never ended)
            c.text.insert(0, chat_echo_);  // (chat's echo: the answer starts with it)
            const ReasoningSplit r = splits_reasoning_ ? split_reasoning(c.text, thinks_) : ReasoningSplit{{}, c.text};
            const std::string answer(r.content);
            Json message = {{"role", "assistant"}, {"content", r.reasons && !r.ended ? Json(nullptr) : Json(answer)}};
            if (splits_reasoning_ && include_reasoning_) message["reasoning_content"] = r.reasons ? Json(std::string(r.reasoning)) : Json(nullptr);
            if (const ToolOutput t = parse_tool_calls(tools_, answer, one_tool_call_); !t.calls.empty()) {
                message["content"] = t.content.empty() ? Json(nullptr) : Json(t.content);
                message["tool_calls"] = tool_calls_json(t.calls);
                if (t.complete) finish = "tool_calls";
            }
            if (wire_) {
                if (logprobs.is_object()) {
                    // (the answer's tokens: those after the thoughts)
                    Json& all = logprobs["content"];
                    const auto thoughts = static_cast<ptrdiff_t>(std::min<int64_t>(thought_tokens(c), static_cast<int64_t>(all.size())));
                    message["logprobs"] = Json(all.begin() + thoughts, all.end());
                }
                return dump(wire_->whole(message, finish, c.stop_string, usage));
            }
            choice_json["message"] = std::move(message);
        }
        choice_json["logprobs"] = logprobs;
        choice_json["finish_reason"] = finish;
        choice_json["stop_reason"] = stop_reason_json(finish, c.stop_string, c.stop_token);
        if (endpoint_ == Endpoint::completions && !c.prompt_logprobs.is_null()) choice_json["prompt_logprobs"] = c.prompt_logprobs;
        choices.push_back(std::move(choice_json));
    }
    Json j = envelope(endpoint_ == Endpoint::chat ? "chat.completion" : "text_completion", std::move(choices), &usage);
    // (chat: the response's, as vLLM's; every choice has the one prompt)
    if (endpoint_ == Endpoint::chat && !choices_.front().prompt_logprobs.is_null()) j["prompt_logprobs"] = choices_.front().prompt_logprobs;
    return dump(j);
}

}  // namespace tps::serve
