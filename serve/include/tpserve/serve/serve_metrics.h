// The server's metrics (docs/api.md, "Metrics"), registered once in a MetricsRegistry and held
// here by reference so the engine loop and the HTTP sessions update them without look-ups.
#pragma once

#include "tpserve/serve/metrics.h"

#include <string>

namespace tps::serve {

struct ServeMetrics {
    explicit ServeMetrics(MetricsRegistry& r);

    MetricsRegistry& registry;
    Gauge& running;
    Gauge& waiting;
    Counter& finished_stop;
    Counter& finished_length;
    Counter& cancelled;
    Counter& timed_out;
    Counter& failed;
    Counter& rejected_queue_full;
    Counter& rejected_invalid;
    Counter& rejected_unavailable;
    Counter& rejected_unauthorized;
    Histogram& time_to_first_token;
    Histogram& inter_token_latency;
    Histogram& request_latency;
    Counter& prompt_tokens;
    Counter& generation_tokens;
    Gauge& kv_usage;
    Gauge& kv_used_tokens;
    Gauge& kv_capacity_tokens;
    Gauge& kv_cached_tokens;
    Counter& prefix_cache_queries;
    Counter& prefix_cache_hits;
    Counter& steps;
    Counter& preemptions;
    Gauge& stored_responses;        // the Responses API's store (response_store.h): responses kept
    Gauge& stored_response_bytes;   // and the bytes they hold (at most --responses-store-mib)

    // Per rank (labels rank, stage): time computing its part of steps, time in collectives.
    Counter& step_seconds(int rank, int stage);
    Counter& collective_seconds(int rank, int stage);
    // category: weights, kv_cache, activations, total; source: predicted, actual
    Gauge& rank_memory(int rank, const std::string& category, const std::string& source);
};

}  // namespace tps::serve
