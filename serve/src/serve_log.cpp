// The server's log lines (serve_log.h).
#include "tpserve/serve/serve_log.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps::serve {

StatsSample StatsSample::of(const ServeMetrics& m) {
    StatsSample s;
    s.prompt_tokens = m.prompt_tokens.value();
    s.generation_tokens = m.generation_tokens.value();
    s.running = m.running.value();
    s.waiting = m.waiting.value();
    s.kv_usage = m.kv_usage.value();
    s.prefix_queries = m.prefix_cache_queries.value();
    s.prefix_hits = m.prefix_cache_hits.value();
    s.preemptions = m.preemptions.value();
    return s;
}

std::optional<std::string> stats_line(const StatsSample& before, const StatsSample& now, double seconds) {
    const double prompt = now.prompt_tokens - before.prompt_tokens;
    const double generated = now.generation_tokens - before.generation_tokens;
    if (prompt <= 0 && generated <= 0 && now.running <= 0 && now.waiting <= 0) return std::nullopt;
    const double per = std::max(seconds, 1e-9);
    const double queries = now.prefix_queries - before.prefix_queries;
    std::string line = fmt::format("tpserve serve: prompt {:.1f} tokens/s, generation {:.1f} tokens/s, running {}, waiting {}, "
                                   "KV cache {:.1f}%",
                                   prompt / per, generated / per, static_cast<long long>(now.running),
                                   static_cast<long long>(now.waiting), 100 * now.kv_usage);
    if (queries > 0) line += fmt::format(", prefix cache hits {:.1f}%", 100 * (now.prefix_hits - before.prefix_hits) / queries);
    if (const double p = now.preemptions - before.preemptions; p > 0) line += fmt::format(", {} preempted", static_cast<long long>(p));
    return line;
}

std::string request_line(const RequestRecord& r) {
    std::string line = fmt::format("tpserve serve: {} \"{} {}\" {} {:.3f} s", r.peer.empty() ? "-" : r.peer, r.method, r.path, r.status,
                                   r.seconds);
    if (!r.generation) return line;
    line += fmt::format("{}, prompt {} ({} cached), output {}", r.stream ? ", stream" : "", r.usage.prompt, r.usage.cached,
                        r.usage.completion);
    if (r.first_output >= 0) line += fmt::format(", first output {:.3f} s", r.first_output);
    if (!r.finish.empty()) line += ", finish " + r.finish;
    return line;
}

}  // namespace tps::serve
