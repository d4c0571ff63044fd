// The Prometheus registry behind GET /metrics: counters, gauges and histograms grouped into
// families by name, rendered as the text exposition format 0.0.4. Values print in the shortest
// form that reads back exactly ("3", "0.25", "1e+21"), so integers carry no ".0" or exponent noise.
#include "tpserve/serve/metrics.h"

#include "tpserve/common/check.h"
#include "tpserve/common/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <variant>

namespace tps::serve {

namespace detail {

struct MetricFamily {
    struct Series {
        Labels labels;  // as first registered
        std::variant<std::unique_ptr<Counter>, std::unique_ptr<Gauge>, std::unique_ptr<Histogram>>
            metric;
    };
    std::string name;
    std::string help;
    MetricKind kind;
    std::vector<double> bounds;      // histograms only
    std::vector<Series> series;      // in order of registration
    std::map<Labels, size_t> index;  // sorted labels -> series[i]
};

}  // namespace detail

namespace {

const char* kind_name(MetricKind kind) {
    switch (kind) {
        case MetricKind::counter: return "counter";
        case MetricKind::gauge: return "gauge";
        case MetricKind::histogram: return "histogram";
    }
    return "?";
}

bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

// [a-zA-Z_:][a-zA-Z0-9_:]* for metric names, [a-zA-Z_][a-zA-Z0-9_]* for label names.
bool is_name(std::string_view s, bool allow_colon) {
    for (size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (!(is_letter(c) || (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return !s.empty();
}

// Checks the label names and returns the sorted list that identifies the series.
Labels series_key(std::string_view metric, MetricKind kind, const Labels& labels) {
    for (const auto& [key, value] : labels) {
        TPS_CHECK_AS(UsageError, is_name(key, false) && !key.starts_with("__"),
                     "metric '{}': label name '{}' is invalid; label names match "
                     "[a-zA-Z_][a-zA-Z0-9_]* and do not start with \"__\"",
                     metric, key);
        TPS_CHECK_AS(UsageError, kind != MetricKind::histogram || key != "le",
                     "histogram '{}': the label name 'le' is reserved for bucket bounds", metric);
    }
    Labels sorted = labels;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < sorted.size(); ++i)
        TPS_CHECK_AS(UsageError, sorted[i - 1].first != sorted[i].first,
                     "metric '{}': label '{}' is given twice", metric, sorted[i].first);
    return sorted;
}

std::vector<double> checked_bounds(std::string_view metric, std::vector<double> bounds) {
    if (!bounds.empty() && bounds.back() == std::numeric_limits<double>::infinity())
        bounds.pop_back();
    for (size_t i = 0; i < bounds.size(); ++i) {
        TPS_CHECK_AS(UsageError, std::isfinite(bounds[i]) && (i == 0 || bounds[i - 1] < bounds[i]),
                     "histogram '{}': bucket bounds must be finite and strictly increasing; "
                     "bound {} is {}",
                     metric, i, bounds[i]);
    }
    return bounds;
}

// Shortest text that reads back exactly; Prometheus spells the specials NaN, +Inf and -Inf.
std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    return fmt::format("{}", v);
}

// Label values escape \ " and newline; HELP text escapes only \ and newline.
std::string escape(std::string_view s, bool quote) {
    std::string out;
    out.reserve(s.size());
    for (const char c : s) {
        if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c == '"' && quote) out += "\\\"";
        else out += c;
    }
    return out;
}

// "{a="x",le="0.5"}", or "" for no labels.
std::string label_text(const Labels& labels, std::string_view le = {}) {
    if (labels.empty() && le.empty()) return "";
    std::string out = "{";
    for (const auto& [key, value] : labels)
        out += fmt::format("{}{}=\"{}\"", out.size() > 1 ? "," : "", key, escape(value, true));
    if (!le.empty()) out += fmt::format("{}le=\"{}\"", out.size() > 1 ? "," : "", le);
    return out + "}";
}

}  // namespace

void Counter::inc(double v) {
    TPS_CHECK_AS(UsageError, v >= 0,
                 "a counter only goes up, but inc({}) was called; use a gauge for values that "
                 "go down",
                 v);
    value_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(checked_bounds("(unnamed)", std::move(bounds))), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
    // First bound with v <= bound; NaN compares false everywhere and so lands in +Inf.
    const auto it = std::partition_point(bounds_.begin(), bounds_.end(),
                                         [v](double b) { return !(v <= b); });
    const auto bucket = static_cast<size_t>(it - bounds_.begin());
    std::lock_guard lock(mu_);
    ++counts_[bucket];
    sum_ += v;
    ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    s.bounds = bounds_;
    std::lock_guard lock(mu_);
    s.cumulative.reserve(counts_.size());
    uint64_t running = 0;
    for (const uint64_t c : counts_) s.cumulative.push_back(running += c);
    s.sum = sum_;
    s.count = count_;
    return s;
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
    TPS_CHECK_AS(UsageError, start > 0 && factor > 1 && count >= 1,
                 "exponential_buckets({}, {}, {}): need start > 0, factor > 1 and count >= 1",
                 start, factor, count);
    std::vector<double> bounds(static_cast<size_t>(count));
    bounds[0] = start;
    for (size_t i = 1; i < bounds.size(); ++i) bounds[i] = bounds[i - 1] * factor;
    return bounds;
}

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

template <class M>
M& MetricsRegistry::add(MetricKind kind, std::string_view name, std::string_view help,
                        std::vector<double> bounds, const Labels& labels) {
    TPS_CHECK_AS(UsageError, is_name(name, true),
                 "metric name '{}' is invalid; metric names match [a-zA-Z_:][a-zA-Z0-9_:]*", name);
    Labels key = series_key(name, kind, labels);
    if (kind == MetricKind::histogram) bounds = checked_bounds(name, std::move(bounds));

    std::lock_guard lock(mu_);
    detail::MetricFamily* family = nullptr;
    if (const auto it = by_name_.find(name); it != by_name_.end()) {
        family = it->second;
        TPS_CHECK_AS(UsageError, family->kind == kind, "metric '{}' is already registered as a {}",
                     name, kind_name(family->kind));
        TPS_CHECK_AS(UsageError, family->help == help,
                     "metric '{}' is already registered with other help text: \"{}\"", name,
                     family->help);
        TPS_CHECK_AS(UsageError, family->bounds == bounds,
                     "histogram '{}' is already registered with other bucket bounds", name);
    } else {
        families_.push_back(std::make_unique<detail::MetricFamily>(detail::MetricFamily{
            std::string(name), std::string(help), kind, bounds, {}, {}}));
        family = families_.back().get();
        by_name_.emplace(family->name, family);
    }
    const auto [it, added] = family->index.try_emplace(std::move(key), family->series.size());
    if (added) {
        if constexpr (std::is_same_v<M, Histogram>)
            family->series.push_back({labels, std::make_unique<Histogram>(std::move(bounds))});
        else
            family->series.push_back({labels, std::make_unique<M>()});
    }
    return *std::get<std::unique_ptr<M>>(family->series[it->second].metric);
}

Counter& MetricsRegistry::counter(std::string_view name, std::string_view help,
                                  const Labels& labels) {
    TPS_CHECK_AS(UsageError, name.ends_with("_total"),
                 "counter '{}': counter names end in \"_total\"", name);
    return add<Counter>(MetricKind::counter, name, help, {}, labels);
}

Gauge& MetricsRegistry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
    return add<Gauge>(MetricKind::gauge, name, help, {}, labels);
}

Histogram& MetricsRegistry::histogram(std::string_view name, std::string_view help,
                                      std::vector<double> bounds, const Labels& labels) {
    return add<Histogram>(MetricKind::histogram, name, help, std::move(bounds), labels);
}

std::string MetricsRegistry::render() const {
    std::string out;
    auto line = [&out](std::string_view name, const std::string& labels, std::string_view value) {
        fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, labels, value);
    };
    std::lock_guard lock(mu_);
    for (const auto& f : families_) {
        fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", f->name,
                       escape(f->help, false), f->name, kind_name(f->kind));
        for (const auto& s : f->series) {
            switch (f->kind) {
                case MetricKind::counter:
                    line(f->name, label_text(s.labels),
                         format_value(std::get<std::unique_ptr<Counter>>(s.metric)->value()));
                    break;
                case MetricKind::gauge:
                    line(f->name, label_text(s.labels),
                         format_value(std::get<std::unique_ptr<Gauge>>(s.metric)->value()));
                    break;
                case MetricKind::histogram: {
                    const auto snap = std::get<std::unique_ptr<Histogram>>(s.metric)->snapshot();
                    const std::string bucket = f->name + "_bucket";
                    for (size_t i = 0; i < snap.cumulative.size(); ++i) {
                        const std::string le =
                            i < snap.bounds.size() ? format_value(snap.bounds[i]) : "+Inf";
                        line(bucket, label_text(s.labels, le),
                             fmt::format("{}", snap.cumulative[i]));
                    }
                    line(f->name + "_sum", label_text(s.labels), format_value(snap.sum));
                    line(f->name + "_count", label_text(s.labels), fmt::format("{}", snap.count));
                    break;
                }
            }
        }
    }
    return out;
}

}  // namespace tps::serve
