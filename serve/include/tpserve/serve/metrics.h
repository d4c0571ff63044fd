// A thread-safe Prometheus metrics registry that renders the text exposition format 0.0.4 for
// GET /metrics (docs/api.md, "Metrics"). Counters and gauges are one atomic each, so the hot path
// takes no lock; a histogram takes its own small mutex so that a snapshot's buckets, sum and count
// agree. Names, label names and clashes are checked when a metric is registered and throw
// tps::UsageError: a bad metric is a bug to fail at startup, not a page Prometheus rejects.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::serve {

// Label name/value pairs, rendered in the order given; two lists with the same pairs in another
// order name the same series.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricKind { counter, gauge, histogram };

// A value that only goes up. inc() throws tps::UsageError for a negative (or NaN) step.
class Counter {
public:
    void inc(double v = 1);
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0};
};

// A value that goes up and down.
class Gauge {
public:
    void set(double v) { value_.store(v, std::memory_order_relaxed); }
    void add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }
    double value() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<double> value_{0};
};

// Observations counted into buckets by upper bound (v <= bound); +Inf is implied. NaN
// observations land only in +Inf, as in the Go client.
class Histogram {
public:
    // bounds: finite and strictly increasing, else tps::UsageError; a trailing +Inf is dropped.
    explicit Histogram(std::vector<double> bounds);

    void observe(double v);

    struct Snapshot {
        std::vector<double> bounds;        // (n) as registered, without +Inf
        std::vector<uint64_t> cumulative;  // (n + 1) observations <= bounds[i]; the last is +Inf
        double sum = 0;
        uint64_t count = 0;                // == cumulative.back()
    };
    Snapshot snapshot() const;  // taken under the lock: buckets, sum and count agree

    const std::vector<double>& bounds() const { return bounds_; }

private:
    const std::vector<double> bounds_;
    mutable std::mutex mu_;
    std::vector<uint64_t> counts_;  // (n + 1) per bucket, not cumulative
    double sum_ = 0;
    uint64_t count_ = 0;
};

// {start, start*factor, ..., start*factor^(count-1)}; start > 0, factor > 1, count >= 1.
std::vector<double> exponential_buckets(double start, double factor, int count);

namespace detail {
struct MetricFamily;  // one name: its help, kind, bounds and series (metrics.cpp)
}

// Families of metrics by name. The same name and labels return the same object, and references
// stay valid for the registry's life. Names match [a-zA-Z_:][a-zA-Z0-9_:]*, counter names end in
// "_total", label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__", and histograms
// take no "le" label. A name reused with another kind, help text or bucket bounds throws.
class MetricsRegistry {
public:
    MetricsRegistry();
    ~MetricsRegistry();
    MetricsRegistry(const MetricsRegistry&) = delete;
    MetricsRegistry& operator=(const MetricsRegistry&) = delete;

    Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
    Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
    Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                         const Labels& labels = {});

    // Every family in the order first registered: # HELP, # TYPE, then each series in the order
    // first registered.
    std::string render() const;

private:
    template <class M>
    M& add(MetricKind kind, std::string_view name, std::string_view help,
           std::vector<double> bounds, const Labels& labels);

    mutable std::mutex mu_;
    std::vector<std::unique_ptr<detail::MetricFamily>> families_;  // in order of registration
    std::map<std::string, detail::MetricFamily*, std::less<>> by_name_;
};

}  // namespace tps::serve
