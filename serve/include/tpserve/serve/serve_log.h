// What the server says on stderr while it serves, as vLLM's and llama.cpp's do: a line of
// throughput and load every --log-stats-interval seconds while there is work, and with
// --log-requests a line per request once it is answered. Pure formatting: the callers print.
#pragma once

#include "tpserve/serve/serve_metrics.h"
#include "tpserve/serve/wire_output.h"

#include <optional>
#include <string>

namespace tps::serve {

// The counters and gauges a stats line is made from, read at one moment.
struct StatsSample {
    double prompt_tokens = 0, generation_tokens = 0;  // totals so far
    double running = 0, waiting = 0;
    double kv_usage = 0;  // 0..1
    double prefix_queries = 0, prefix_hits = 0, preemptions = 0;  // totals so far

    static StatsSample of(const ServeMetrics& m);
};

// The line for the `seconds` between two samples: prompt and generation throughput, running and
// waiting requests, KV cache use, the prefix cache's hit rate and preemptions in the interval.
// Nothing when the server was idle (no tokens, nothing running or waiting).
std::optional<std::string> stats_line(const StatsSample& before, const StatsSample& now, double seconds);

// One answered request, as the HTTP session saw it.
struct RequestRecord {
    std::string peer;    // the client's address:port
    std::string method;  // "-" when the request could not be read
    std::string path;    // without the query
    int status = 0;      // the HTTP status sent (a stream that failed after it began: 200, with `finish` "error")
    double seconds = 0;  // from the request read to its answer written (or the client gone)
    // a generation's: its usage, the first output's delay (negative: none came), each choice's
    // finish reason ("stop", "length", "tool_calls", "error"; "gone" when the client left)
    bool generation = false;
    bool stream = false;
    Usage usage;
    double first_output = -1;
    std::string finish;
};

std::string request_line(const RequestRecord& r);

}  // namespace tps::serve
