// The builtins a chat template can call: jinja2's filters and tests that real templates use, the
// str / dict methods they call, the globals transformers provides (raise_exception, strftime_now)
// and jinja2's (range, namespace, dict), and tojson as transformers overrides it. Filter and test
// names are resolved when the template is parsed, so an unsupported one is reported with its line.
#pragma once

#include "value.h"

#include <ctime>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace tps::chat {

// The arguments of a call, as Python binds them.
struct CallArgs {
    std::vector<Value> positional;
    Entries keyword;

    // The argument at `position` or named `name`; nullptr when the caller left it out.
    const Value* get(size_t position, std::string_view name) const;
    // Rejects more than `max_positional` positional arguments and keywords not in `names`.
    void check(std::string_view callee, size_t max_positional, std::initializer_list<std::string_view> names) const;
};

enum class FilterId {
    abs, capitalize, default_value, first, float_value, indent, int_value, items, join, last, length, list,
    lower, map, reject, rejectattr, replace, reverse, select, selectattr, string, title, tojson, trim, upper,
};

enum class TestId {
    defined, undefined, none, boolean, true_value, false_value, number, integer, float_value, string, mapping,
    iterable, sequence, callable, odd, even, divisibleby, eq, ne, lt, le, gt, ge, in, lower, upper, sameas,
};

// nullopt: not supported here. `why` then says whether jinja2 has it at all.
std::optional<FilterId> find_filter(std::string_view name);
std::optional<TestId> find_test(std::string_view name);
std::string unsupported_filter_message(std::string_view name);
std::string unsupported_test_message(std::string_view name);

Value apply_filter(FilterId id, const Value& input, const CallArgs& args);
bool apply_test(TestId id, const Value& input, const CallArgs& args);

// self.name(args...) for str, dict and loop methods; nullopt when `self` has no such method.
std::optional<Value> call_method(const Value& self, std::string_view name, const CallArgs& args);

// What strftime_now() formats: the current local time by default (transformers calls
// datetime.now()); tests fix it.
using Clock = std::function<std::tm()>;
Value call_builtin(Builtin b, const CallArgs& args, const Clock& clock);

// json.dumps(v, ensure_ascii, indent, separators, sort_keys), as transformers' tojson filter calls it.
struct JsonStyle {
    bool ensure_ascii = false;
    std::optional<std::string> indent;  // nullopt: one line
    std::string item_separator = ", ";
    std::string key_separator = ": ";
    bool sort_keys = false;
};
std::string json_dumps(const Value& v, const JsonStyle& style);

}  // namespace tps::chat
