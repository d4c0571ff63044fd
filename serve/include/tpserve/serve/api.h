// The endpoints (docs/api.md), apart from the network: a request's method, target and body in, a
// Reply out. A generation request's Reply carries its Jobs, one per choice (not yet submitted),
// and the writer that formats their output; the HTTP session sets the jobs' wake-up and then
// calls submit(). Called on the Asio threads: everything here is thread-safe.
#pragma once

#include "tpserve/serve/request.h"
#include "tpserve/serve/response.h"
#include "tpserve/serve/response_store.h"
#include "tpserve/serve/scheduler.h"
#include "tpserve/serve/serve_metrics.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::serve {

struct Reply {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    // a generation request: the session streams (request().stream) or collects the jobs' output;
    // one job per choice, in the order of the response's choices
    std::vector<std::shared_ptr<Job>> jobs;
    std::shared_ptr<ResponseWriter> writer;
    std::optional<ApiError> error;  // what an error reply answers (for another API's error shape)

    static Reply error_of(const ApiError& e);
};

class Api {
public:
    // `api_key`: when not empty, every endpoint but the chat page, /health and /metrics needs the
    // header `Authorization: Bearer <api_key>` (a 401 otherwise), as vLLM's and llama.cpp's --api-key.
    // `responses_store_bytes`: what the Responses API's store keeps at most (0: nothing is stored).
    explicit Api(ServeMetrics& metrics, std::string api_key = {}, size_t responses_store_bytes = 0);

    // The model is loaded: generation endpoints open (unless a stop was asked while loading).
    // `plan_json`: what GET /v1/plan returns, rendered on each request.
    void ready(ServedModel model, Scheduler& scheduler, std::function<std::string()> plan_json);
    // Shutting down: new generation requests get 503 (also when asked while still loading).
    void stopping();
    // The scheduler is going away: nothing reaches it any more.
    void detach();

    // `authorization`: the request's Authorization header (empty if none).
    Reply handle(std::string_view method, std::string_view target, std::string_view body, std::string_view authorization = {});
    // An error the HTTP layer answers itself (a body over the limit), in the shape of the API at
    // `target` (Anthropic's for its Messages API, else OpenAI's).
    static Reply error_at(std::string_view target, const ApiError& e);
    // Hands a generation Reply's jobs to the scheduler, all or none; a 400 / 429 / 503 Reply when
    // they are not taken.
    std::optional<Reply> submit(const std::vector<std::shared_ptr<Job>>& jobs);
    // A session's client went away with jobs unfinished (or one of them failed): cancels them all.
    void cancelled(const std::vector<std::shared_ptr<Job>>& jobs);

private:
    enum class State { loading, ready, stopping };
    Reply route(std::string_view method, std::string_view target, std::string_view body, std::string_view authorization);
    // the API a generation request speaks: the Responses and Messages APIs are chat requests in
    // their own terms
    enum class Wire { completions, chat, responses, messages };
    Reply generation(Wire wire, std::string_view body);
    Reply models() const;
    // GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items (`query`: after '?')
    Reply stored_response(std::string_view method, std::string_view rest, std::string_view query);
    void store_gauges();  // the store's size and bytes into /metrics
    nlohmann::ordered_json model_json(const std::string& id) const;  // the served model under a name, as /v1/models lists it

    ServeMetrics& m_;
    const std::string api_key_;
    std::atomic<State> state_{State::loading};
    ServedModel model_;                  // set once by ready()
    std::function<std::string()> plan_json_;  // set once by ready()
    std::shared_ptr<ResponseStore> store_;    // the Responses API's (answers put into it when they end)
    std::mutex scheduler_mu_;
    Scheduler* scheduler_ = nullptr;     // set by ready(), cleared by detach()
    std::atomic<bool> stop_asked_{false};
};

// Whether an Authorization header holds `Bearer <key>` (the scheme in any case; compared in a
// time that does not depend on where the key differs).
bool bearer_matches(std::string_view authorization, std::string_view key);

// The chat page (serve/web/index.html, embedded at build time).
std::string_view chat_page();

}  // namespace tps::serve
