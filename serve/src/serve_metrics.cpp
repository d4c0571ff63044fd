#include "tpserve/serve/serve_metrics.h"

namespace tps::serve {
namespace {

// Latency buckets from 5 ms to about 80 s.
std::vector<double> latency_buckets() { return exponential_buckets(0.005, 2, 15); }

}  // namespace

ServeMetrics::ServeMetrics(MetricsRegistry& r)
    : registry(r),
      running(r.gauge("tpserve_requests_running", "Sequences in the running batch")),
      waiting(r.gauge("tpserve_requests_waiting", "Requests waiting for a place in the running batch")),
      finished_stop(r.counter("tpserve_requests_total", "Finished requests by outcome", {{"outcome", "stop"}})),
      finished_length(r.counter("tpserve_requests_total", "Finished requests by outcome", {{"outcome", "length"}})),
      cancelled(r.counter("tpserve_requests_total", "Finished requests by outcome", {{"outcome", "cancelled"}})),
      timed_out(r.counter("tpserve_requests_total", "Finished requests by outcome", {{"outcome", "timeout"}})),
      failed(r.counter("tpserve_requests_total", "Finished requests by outcome", {{"outcome", "error"}})),
      rejected_queue_full(r.counter("tpserve_requests_rejected_total", "Requests refused before they ran, by reason",
                                    {{"reason", "queue_full"}})),
      rejected_invalid(r.counter("tpserve_requests_rejected_total", "Requests refused before they ran, by reason",
                                 {{"reason", "invalid"}})),
      rejected_unavailable(r.counter("tpserve_requests_rejected_total", "Requests refused before they ran, by reason",
                                     {{"reason", "unavailable"}})),
      rejected_unauthorized(r.counter("tpserve_requests_rejected_total", "Requests refused before they ran, by reason",
                                      {{"reason", "unauthorized"}})),
      time_to_first_token(r.histogram("tpserve_time_to_first_token_seconds", "From arrival to the first token",
                                      latency_buckets())),
      inter_token_latency(r.histogram("tpserve_inter_token_latency_seconds", "Between consecutive tokens of a request",
                                      exponential_buckets(0.001, 2, 15))),
      request_latency(r.histogram("tpserve_request_latency_seconds", "From arrival to the last token", latency_buckets())),
      prompt_tokens(r.counter("tpserve_prompt_tokens_total", "Prompt tokens prefilled")),
      generation_tokens(r.counter("tpserve_generation_tokens_total", "Tokens generated")),
      kv_usage(r.gauge("tpserve_kv_cache_usage_ratio", "Used KV-cache blocks over all blocks")),
      kv_used_tokens(r.gauge("tpserve_kv_cache_tokens", "KV-cache tokens", {{"state", "used"}})),
      kv_capacity_tokens(r.gauge("tpserve_kv_cache_tokens", "KV-cache tokens", {{"state", "capacity"}})),
      kv_cached_tokens(r.gauge("tpserve_kv_cache_tokens", "KV-cache tokens", {{"state", "cached"}})),
      prefix_cache_queries(r.counter("tpserve_prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache")),
      prefix_cache_hits(r.counter("tpserve_prefix_cache_hits_total", "Prompt tokens found in the prefix cache (not prefilled)")),
      steps(r.counter("tpserve_steps_total", "Engine steps run")),
      preemptions(r.counter("tpserve_preemptions_total", "Running sequences whose KV was freed for others (fed again later)")),
      stored_responses(r.gauge("tpserve_responses_stored", "Responses the Responses API's store keeps")),
      stored_response_bytes(r.gauge("tpserve_responses_stored_bytes", "Bytes the Responses API's store holds (rank 0's memory)")) {}

Counter& ServeMetrics::step_seconds(int rank, int stage) {
    return registry.counter("tpserve_step_seconds_total", "Seconds each rank spent computing its part of steps",
                            {{"rank", std::to_string(rank)}, {"stage", std::to_string(stage)}});
}

Counter& ServeMetrics::collective_seconds(int rank, int stage) {
    return registry.counter("tpserve_collective_seconds_total",
                            "Seconds each rank spent in collectives and hand-overs during steps",
                            {{"rank", std::to_string(rank)}, {"stage", std::to_string(stage)}});
}

Gauge& ServeMetrics::rank_memory(int rank, const std::string& category, const std::string& source) {
    return registry.gauge("tpserve_rank_memory_bytes", "Bytes each rank holds, as the plan predicted and as measured",
                          {{"rank", std::to_string(rank)}, {"category", category}, {"source", source}});
}

}  // namespace tps::serve
