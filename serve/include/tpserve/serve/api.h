// The endpoints (docs/api.md), apart from the network: a request's method, target and body in, a
// Reply out. A generation request's Reply carries its Job (not yet submitted) and the writer that
// formats its output; the HTTP session sets the job's wake-up and then calls submit(). Called on
// the Asio threads: everything here is thread-safe.
#pragma once

#include "tpserve/serve/request.h"
#include "tpserve/serve/response.h"
#include "tpserve/serve/scheduler.h"
#include "tpserve/serve/serve_metrics.h"

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
    // a generation request: the session streams (request().stream) or collects the job's output
    std::shared_ptr<Job> job;
    std::shared_ptr<ResponseWriter> writer;

    static Reply error(const ApiError& e);
};

class Api {
public:
    explicit Api(ServeMetrics& metrics);

    // The model is loaded: generation endpoints open (unless a stop was asked while loading).
    // `plan_json`: what GET /v1/plan returns, rendered on each request.
    void ready(ServedModel model, Scheduler& scheduler, std::function<std::string()> plan_json);
    // Shutting down: new generation requests get 503 (also when asked while still loading).
    void stopping();
    // The scheduler is going away: nothing reaches it any more.
    void detach();

    Reply handle(std::string_view method, std::string_view target, std::string_view body);
    // Hands a generation Reply's job to the scheduler; a 429 / 503 Reply when it is not taken.
    std::optional<Reply> submit(const std::shared_ptr<Job>& job);
    // A session's client went away with its job unfinished.
    void cancelled(const std::shared_ptr<Job>& job);

private:
    enum class State { loading, ready, stopping };
    Reply generation(Endpoint endpoint, std::string_view body);
    Reply models() const;

    ServeMetrics& m_;
    std::atomic<State> state_{State::loading};
    ServedModel model_;                  // set once by ready()
    std::function<std::string()> plan_json_;  // set once by ready()
    std::mutex scheduler_mu_;
    Scheduler* scheduler_ = nullptr;     // set by ready(), cleared by detach()
    std::atomic<bool> stop_asked_{false};
};

// The chat page (serve/web/index.html, embedded at build time).
std::string_view chat_page();

}  // namespace tps::serve
