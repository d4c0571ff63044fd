// The Prometheus registry: exact text of every metric type, escaping, value spelling, one object
// per name and labels, every registration error, and exact totals under concurrent updates.
#include "tpserve/serve/metrics.h"
#include "tpserve/serve/serve_log.h"

#include "tpserve/common/error.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace tps::serve {
namespace {

// Expects `fn` to throw UsageError whose message names `what`.
template <class Fn>
void expect_usage_error(Fn fn, const std::string& what) {
    try {
        fn();
        ADD_FAILURE() << "no UsageError naming '" << what << "'";
    } catch (const UsageError& e) {
        EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
}

TEST(Metrics, RendersEveryTypeExactly) {
    MetricsRegistry reg;
    reg.counter("tpserve_requests_total", "Finished requests.", {{"outcome", "stop"}}).inc(3);
    reg.gauge("tpserve_kv_cache_usage_ratio", "Used KV blocks / all KV blocks.").set(0.25);
    auto& h = reg.histogram("tpserve_request_latency_seconds", "Arrival to last token.",
                            {0.1, 1, 10}, {{"model", "m"}});
    for (const double v : {0.0625, 0.5, 0.5, 100.0}) h.observe(v);
    reg.counter("tpserve_requests_total", "Finished requests.", {{"outcome", "length"}}).inc();
    reg.gauge("tpserve_rank_memory_bytes", "Per-rank memory.",
              {{"rank", "1"}, {"category", "weights"}})
        .set(17179869184);

    EXPECT_EQ(reg.render(),
              "# HELP tpserve_requests_total Finished requests.\n"
              "# TYPE tpserve_requests_total counter\n"
              "tpserve_requests_total{outcome=\"stop\"} 3\n"
              "tpserve_requests_total{outcome=\"length\"} 1\n"
              "# HELP tpserve_kv_cache_usage_ratio Used KV blocks / all KV blocks.\n"
              "# TYPE tpserve_kv_cache_usage_ratio gauge\n"
              "tpserve_kv_cache_usage_ratio 0.25\n"
              "# HELP tpserve_request_latency_seconds Arrival to last token.\n"
              "# TYPE tpserve_request_latency_seconds histogram\n"
              "tpserve_request_latency_seconds_bucket{model=\"m\",le=\"0.1\"} 1\n"
              "tpserve_request_latency_seconds_bucket{model=\"m\",le=\"1\"} 3\n"
              "tpserve_request_latency_seconds_bucket{model=\"m\",le=\"10\"} 3\n"
              "tpserve_request_latency_seconds_bucket{model=\"m\",le=\"+Inf\"} 4\n"
              "tpserve_request_latency_seconds_sum{model=\"m\"} 101.0625\n"
              "tpserve_request_latency_seconds_count{model=\"m\"} 4\n"
              "# HELP tpserve_rank_memory_bytes Per-rank memory.\n"
              "# TYPE tpserve_rank_memory_bytes gauge\n"
              "tpserve_rank_memory_bytes{rank=\"1\",category=\"weights\"} 17179869184\n");
}

TEST(Metrics, EmptyRegistryRendersNothing) { EXPECT_EQ(MetricsRegistry().render(), ""); }

TEST(Metrics, HistogramSnapshotIsCumulativeAndNanGoesToInf) {
    Histogram h({1, 2});
    h.observe(1);  // le is inclusive
    h.observe(1.5);
    h.observe(std::nan(""));
    const auto s = h.snapshot();
    EXPECT_EQ(s.bounds, (std::vector<double>{1, 2}));
    EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{1, 2, 3}));
    EXPECT_EQ(s.count, 3u);
    EXPECT_TRUE(std::isnan(s.sum));
}

TEST(Metrics, EscapesLabelValuesAndHelp) {
    MetricsRegistry reg;
    reg.gauge("g", "back\\slash \"quoted\"\nsecond line", {{"path", "a\\b\"c\nd"}}).set(1);
    EXPECT_EQ(reg.render(),
              "# HELP g back\\\\slash \"quoted\"\\nsecond line\n"
              "# TYPE g gauge\n"
              "g{path=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(Metrics, ValuesPrintShortestExactly) {
    const std::vector<std::pair<double, std::string>> cases = {
        {3, "3"},
        {0.25, "0.25"},
        {-2.5, "-2.5"},
        {0.1, "0.1"},
        {1e21, "1e+21"},
        {123456789, "123456789"},
        {std::nan(""), "NaN"},
        {std::numeric_limits<double>::infinity(), "+Inf"},
        {-std::numeric_limits<double>::infinity(), "-Inf"},
    };
    for (const auto& [value, text] : cases) {
        MetricsRegistry reg;
        reg.gauge("g", "h").set(value);
        EXPECT_EQ(reg.render(), "# HELP g h\n# TYPE g gauge\ng " + text + "\n") << text;
    }
}

TEST(Metrics, SameNameAndLabelsReturnTheSameObject) {
    MetricsRegistry reg;
    Counter& a = reg.counter("x_total", "h", {{"a", "1"}, {"b", "2"}});
    EXPECT_EQ(&a, &reg.counter("x_total", "h", {{"a", "1"}, {"b", "2"}}));
    EXPECT_EQ(&a, &reg.counter("x_total", "h", {{"b", "2"}, {"a", "1"}}));  // order-free
    EXPECT_NE(&a, &reg.counter("x_total", "h", {{"a", "1"}, {"b", "3"}}));
    Gauge& g = reg.gauge("g", "h");
    EXPECT_EQ(&g, &reg.gauge("g", "h"));
    Histogram& h = reg.histogram("h_seconds", "h", {1, 2});
    const double inf = std::numeric_limits<double>::infinity();
    EXPECT_EQ(&h, &reg.histogram("h_seconds", "h", {1, 2, inf}));  // a trailing +Inf is implied
    // Many more registrations do not move earlier objects.
    for (int i = 0; i < 1000; ++i) {
        std::string name(1, 'g');  // (not "g" + to_string: GCC 12 -O3 warns falsely about that)
        name += std::to_string(i);
        reg.gauge(name, "h", {{"i", "x"}});
    }
    a.inc(2);
    EXPECT_EQ(reg.counter("x_total", "h", {{"a", "1"}, {"b", "2"}}).value(), 2);
}

TEST(Metrics, ExponentialBuckets) {
    EXPECT_EQ(exponential_buckets(0.001, 2, 4), (std::vector<double>{0.001, 0.002, 0.004, 0.008}));
    EXPECT_EQ(exponential_buckets(1, 10, 1), (std::vector<double>{1}));
    EXPECT_THROW(exponential_buckets(0, 2, 3), UsageError);
    EXPECT_THROW(exponential_buckets(1, 1, 3), UsageError);
    EXPECT_THROW(exponential_buckets(1, 2, 0), UsageError);
}

TEST(Metrics, BadNamesThrowNamingThem) {
    MetricsRegistry reg;
    for (const std::string bad : {"", "1abc", "a-b", "a b", "caf\xc3\xa9"})
        expect_usage_error([&] { reg.gauge(bad, "h"); }, "'" + bad + "'");
    EXPECT_NO_THROW(reg.gauge("ns:sub_metric9", "h"));
    expect_usage_error([&] { reg.counter("requests", "h"); }, "'requests'");  // no _total
    for (const std::string bad : {"", "1x", "a-b", "__reserved"})
        expect_usage_error([&] { reg.gauge("g", "h", {{bad, "v"}}); }, "'" + bad + "'");
    expect_usage_error([&] { reg.gauge("g", "h", {{"a:b", "v"}}); }, "'a:b'");  // no colon
    expect_usage_error([&] { reg.gauge("g", "h", {{"a", "1"}, {"a", "2"}}); }, "'a'");
    expect_usage_error([&] { reg.histogram("lat_seconds", "h", {1}, {{"le", "1"}}); },
                       "'lat_seconds'");
    EXPECT_NO_THROW(reg.gauge("g", "h", {{"le", "1"}}));  // only histograms reserve "le"
    EXPECT_EQ(reg.render().find("lat_seconds"), std::string::npos);  // nothing half-registered
}

TEST(Metrics, ReusedNamesMustAgree) {
    MetricsRegistry reg;
    reg.gauge("a_total", "h");
    expect_usage_error([&] { reg.counter("a_total", "h"); }, "'a_total'");  // type clash
    expect_usage_error([&] { reg.histogram("a_total", "h", {1}); }, "'a_total'");
    expect_usage_error([&] { reg.gauge("a_total", "other help"); }, "'a_total'");
    reg.histogram("lat_seconds", "h", {1, 2});
    expect_usage_error([&] { reg.histogram("lat_seconds", "h", {1, 3}); }, "'lat_seconds'");
    expect_usage_error([&] { reg.histogram("lat_seconds", "h", {1}); }, "'lat_seconds'");
    // A new label set of a known histogram still has to use the family's bounds.
    EXPECT_NO_THROW(reg.histogram("lat_seconds", "h", {1, 2}, {{"x", "y"}}));
    expect_usage_error([&] { reg.histogram("lat_seconds", "h", {5}, {{"x", "z"}}); },
                       "'lat_seconds'");
}

TEST(Metrics, BadBoundsAndNegativeIncrementsThrow) {
    MetricsRegistry reg;
    const double inf = std::numeric_limits<double>::infinity();
    for (const auto& bad : std::vector<std::vector<double>>{
             {2, 1}, {1, 1}, {std::nan(""), 1}, {-inf, 1}, {1, inf, 2}})
        expect_usage_error([&] { reg.histogram("h_seconds", "h", bad); }, "'h_seconds'");
    EXPECT_THROW(Histogram({3, 2}), UsageError);
    EXPECT_NO_THROW(reg.histogram("only_inf_seconds", "h", {}));
    Counter& c = reg.counter("c_total", "h");
    EXPECT_THROW(c.inc(-1), UsageError);
    EXPECT_THROW(c.inc(std::nan("")), UsageError);
    c.inc(0);
    EXPECT_EQ(c.value(), 0);
}

TEST(Metrics, ConcurrentUpdatesGiveExactTotals) {
    MetricsRegistry reg;
    constexpr int kThreads = 4;
    constexpr int kPerThread = 100000;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&reg, t] {
            // Each thread registers the same series itself: registration is thread-safe too.
            Counter& c = reg.counter("ops_total", "h", {{"kind", "x"}});
            Gauge& g = reg.gauge("level", "h");
            Histogram& h = reg.histogram("size_bytes", "h", {0, 1, 2});
            for (int i = 0; i < kPerThread; ++i) {
                c.inc();
                g.add(t % 2 == 0 ? 2 : -1);
                h.observe(i % 4);  // 0, 1, 2, 3: a quarter in each bucket
                if (i % 10000 == 0) (void)reg.render();  // render while others write
            }
        });
    }
    for (auto& th : threads) th.join();
    const double n = double{kThreads} * kPerThread;
    EXPECT_EQ(reg.counter("ops_total", "h", {{"kind", "x"}}).value(), n);
    EXPECT_EQ(reg.gauge("level", "h").value(), 2 * kPerThread * 2 - 2 * kPerThread);
    const auto s = reg.histogram("size_bytes", "h", {0, 1, 2}).snapshot();
    const auto q = static_cast<uint64_t>(n / 4);
    EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{q, 2 * q, 3 * q, 4 * q}));
    EXPECT_EQ(s.count, 4 * q);
    EXPECT_EQ(s.sum, q * (0 + 1 + 2 + 3));
}

// The stats line: rates over the interval from two samples of the server's metrics, nothing when
// idle; the request line: what was asked, how it was answered, a generation's tokens.
TEST(ServeLog, StatsLineIsRatesOverTheInterval) {
    MetricsRegistry registry;
    ServeMetrics m(registry);
    const StatsSample idle = StatsSample::of(m);
    EXPECT_EQ(stats_line(idle, StatsSample::of(m), 10), std::nullopt);
    m.prompt_tokens.inc(500);
    m.generation_tokens.inc(120);
    m.running.set(3);
    m.waiting.set(1);
    m.kv_usage.set(0.25);
    m.prefix_cache_queries.inc(400);
    m.prefix_cache_hits.inc(100);
    m.preemptions.inc(2);
    const auto line = stats_line(idle, StatsSample::of(m), 10);
    ASSERT_TRUE(line);
    EXPECT_EQ(*line, "tpserve serve: prompt 50.0 tokens/s, generation 12.0 tokens/s, running 3, waiting 1, KV cache 25.0%, "
                     "prefix cache hits 25.0%, 2 preempted");
    // work still running with no tokens this interval (a long prefill step): still said
    const StatsSample busy = StatsSample::of(m);
    EXPECT_TRUE(stats_line(busy, busy, 10));
}

TEST(ServeLog, RequestLineSaysWhatWasAskedAndAnswered) {
    RequestRecord r;
    r.peer = "127.0.0.1:5000";
    r.method = "GET";
    r.path = "/health";
    r.status = 200;
    r.seconds = 0.0004;
    EXPECT_EQ(request_line(r), "tpserve serve: 127.0.0.1:5000 \"GET /health\" 200 0.000 s");
    r.method = "POST";
    r.path = "/v1/chat/completions";
    r.generation = true;
    r.stream = true;
    r.usage = {30, 12, 16};
    r.first_output = 0.0421;
    r.finish = "stop,length";
    r.seconds = 0.5;
    EXPECT_EQ(request_line(r), "tpserve serve: 127.0.0.1:5000 \"POST /v1/chat/completions\" 200 0.500 s, stream, prompt 30 "
                               "(16 cached), output 12, first output 0.042 s, finish stop,length");
}

}  // namespace
}  // namespace tps::serve
