#include "tpserve/engine/structured/int_range.h"

#include "tpserve/common/check.h"

#include <string>
#include <vector>

namespace tps::structured {
namespace {

using G = GrammarBuilder;
constexpr int kOpenDigits = 16;  // an open bound goes up to this many digits

Element digits(char lo, char hi) {
    return G::bytes(ByteSet::range(static_cast<unsigned char>(lo), static_cast<unsigned char>(hi)));
}

// Digit strings of one length from x to y (x <= y, leading zeros allowed: they are the tail of a
// longer numeral), as alternatives added to `rule` after `prefix`.
void same_length(G& g, RuleId rule, std::vector<Element> prefix, const std::string& x, const std::string& y) {
    if (x.empty()) {
        g.add_alternative(rule, std::move(prefix));
        return;
    }
    const size_t rest = x.size() - 1;
    const std::string x_tail = x.substr(1), y_tail = y.substr(1);
    const bool x_low = x_tail.find_first_not_of('0') == std::string::npos;
    const bool y_high = y_tail.find_first_not_of('9') == std::string::npos;
    auto with = [&](Element first) {
        std::vector<Element> p = prefix;
        p.push_back(first);
        return p;
    };
    auto any_digits = [&](std::vector<Element> p) {
        if (rest > 0) p.push_back(G::ref(g.repeat(g.sequence({digits('0', '9')}, "digit"), static_cast<int64_t>(rest),
                                                  static_cast<int64_t>(rest))));
        return p;
    };
    if (x[0] == y[0]) {
        same_length(g, rule, with(digits(x[0], x[0])), x_tail, y_tail);
        return;
    }
    if (x_low && y_high) {
        g.add_alternative(rule, any_digits(with(digits(x[0], y[0]))));
        return;
    }
    // x's first digit with the rest from x's tail up; those strictly between with any tail; y's
    // first digit with the rest up to y's tail
    char lo = x[0], hi = y[0];
    if (!x_low) {
        same_length(g, rule, with(digits(x[0], x[0])), x_tail, std::string(rest, '9'));
        ++lo;
    }
    if (!y_high) --hi;
    if (lo <= hi) g.add_alternative(rule, any_digits(with(digits(lo, hi))));
    if (!y_high) same_length(g, rule, with(digits(y[0], y[0])), std::string(rest, '0'), y_tail);
}

// The numerals (no leading zero) of the values a..b, 0 <= a <= b; b < 0: no upper bound (up to
// kOpenDigits digits).
void non_negative(G& g, RuleId rule, std::vector<Element> prefix, uint64_t a, int64_t b) {
    const std::string as = std::to_string(a);
    const size_t longest = b < 0 ? std::max<size_t>(kOpenDigits, as.size()) : std::to_string(b).size();
    for (size_t len = as.size(); len <= longest; ++len) {
        std::string low = as;
        if (len > as.size()) {
            low.assign(len, '0');  // 10...0
            low[0] = '1';
        }
        const std::string high = b >= 0 && len == longest ? std::to_string(b) : std::string(len, '9');
        same_length(g, rule, prefix, low, high);
    }
}

}  // namespace

RuleId add_int_range(GrammarBuilder& g, std::optional<int64_t> lo, std::optional<int64_t> hi) {
    TPS_CHECK_AS(UsageError, !lo || !hi || *lo <= *hi, "the integer range {} to {} is empty", *lo, *hi);
    const RuleId rule = g.add_rule("int-range");
    // non-negative values: [max(lo, 0), hi]
    if (!hi || *hi >= 0) non_negative(g, rule, {}, lo && *lo > 0 ? static_cast<uint64_t>(*lo) : 0, hi ? *hi : -1);
    // negative values: "-" and the magnitudes [max(-hi, 1), -lo]
    if (!lo || *lo < 0) {
        const uint64_t from = hi && *hi < 0 ? static_cast<uint64_t>(-(*hi + 1)) + 1 : 1;
        const int64_t to = lo ? (*lo == INT64_MIN ? -1 : -*lo) : -1;  // (INT64_MIN: open, as 19 digits are)
        non_negative(g, rule, {G::byte('-')}, from, to);
    }
    return rule;
}

}  // namespace tps::structured
