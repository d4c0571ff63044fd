// What a template can call: str, dict and loop methods (the sandbox allows only non-mutating ones),
// jinja2's globals range / namespace / dict, and the globals transformers adds, raise_exception and
// strftime_now. Also how call arguments bind, for these and for filters and tests.
#include "builtins.h"

#include "operators.h"
#include "pystr.h"

#include <fmt/format.h>

#include <cstdint>

namespace tps::chat {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

int64_t int_arg(const Value& v, std::string_view callee) {
    if (v.is_undefined()) raise_undefined(v);
    if (!v.is_integral()) {
        throw EvalError(fmt::format("{}: '{}' object cannot be interpreted as an integer", callee, type_name(v)));
    }
    return v.as_int();
}

const std::string& str_arg(const Value& v, std::string_view callee) {
    if (v.is_undefined()) raise_undefined(v);
    if (!v.is_string()) throw EvalError(fmt::format("{}() argument must be str, not {}", callee, type_name(v)));
    return v.as_string();
}

std::optional<std::string_view> chars_arg(const CallArgs& args, std::string_view callee) {
    const Value* chars = args.get(0, "");
    if (!chars || chars->is_none()) return std::nullopt;
    if (!chars->is_string()) throw EvalError(fmt::format("{} arg must be None or str", callee));
    return std::string_view(chars->as_string());
}

bool affix_match(const std::string& text, const Value& affix, bool prefix, std::string_view callee) {
    const auto one = [&](const Value& a) {
        const std::string& s = str_arg(a, callee);
        if (s.size() > text.size()) return false;
        return prefix ? text.compare(0, s.size(), s) == 0 : text.compare(text.size() - s.size(), s.size(), s) == 0;
    };
    if (affix.is_list() && affix.as_list().is_tuple) {
        for (const auto& a : affix.as_list().items) {
            if (one(a)) return true;
        }
        return false;
    }
    return one(affix);
}

Value str_list(std::vector<std::string> parts) {
    std::vector<Value> items;
    items.reserve(parts.size());
    for (auto& p : parts) items.emplace_back(std::move(p));
    return Value::list(std::move(items));
}

std::optional<Value> string_method(const std::string& s, std::string_view name, const CallArgs& args) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
        args.check(name, 1, {});
        return Value(pystr::strip(s, chars_arg(args, name), name != "rstrip", name != "lstrip"));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
        args.check(name, 0, {});
        if (name == "upper") return Value(pystr::upper(s));
        if (name == "lower") return Value(pystr::lower(s));
        return Value(name == "title" ? pystr::title(s) : pystr::capitalize(s));
    }
    if (name == "startswith" || name == "endswith") {
        args.check(name, 1, {});
        if (args.positional.empty()) throw EvalError(fmt::format("{}() takes at least 1 argument (0 given)", name));
        return Value(affix_match(s, args.positional[0], name == "startswith", name));
    }
    if (name == "split") {
        args.check(name, 2, {"sep", "maxsplit"});
        const Value* sep = args.get(0, "sep");
        const Value* maxsplit = args.get(1, "maxsplit");
        const int64_t limit = maxsplit ? int_arg(*maxsplit, "split") : -1;
        if (!sep || sep->is_none()) return str_list(pystr::split(s, std::nullopt, limit));
        const std::string& separator = str_arg(*sep, "split");
        if (separator.empty()) throw EvalError("empty separator");
        return str_list(pystr::split(s, std::string_view(separator), limit));
    }
    if (name == "replace") {
        args.check(name, 3, {});
        if (args.positional.size() < 2) throw EvalError("replace() takes at least 2 arguments");
        const int64_t count = args.positional.size() > 2 ? int_arg(args.positional[2], "replace") : -1;
        return Value(pystr::replace(s, str_arg(args.positional[0], "replace"), str_arg(args.positional[1], "replace"),
                                    count));
    }
    if (name == "join") {
        args.check(name, 1, {});
        if (args.positional.empty()) throw EvalError("join() takes exactly one argument (0 given)");
        std::string out;
        size_t i = 0;
        for (const auto& item : iterate(args.positional[0])) {
            if (!item.is_string()) {
                throw EvalError(
                    fmt::format("sequence item {}: expected str instance, {} found", i, type_name(item)));
            }
            if (i++) out += s;
            out += item.as_string();
        }
        return Value(std::move(out));
    }
    return std::nullopt;
}

std::optional<Value> dict_method(const Value& self, std::string_view name, const CallArgs& args) {
    const DictData& dict = self.as_dict();
    if (name == "get") {
        args.check(name, 2, {});
        if (args.positional.empty()) throw EvalError("get expected at least 1 argument, got 0");
        const Value& key = args.positional[0];
        const Value* found = key.is_string() ? dict.find(key.as_string()) : nullptr;
        if (found) return *found;
        return args.positional.size() > 1 ? args.positional[1] : Value::none();
    }
    if (name == "items" || name == "keys" || name == "values") {
        args.check(name, 0, {});
        std::vector<Value> out;
        for (const auto& [k, v] : dict.items) {
            if (name == "items") out.push_back(Value::list({Value(k), v}, true));
            else out.push_back(name == "keys" ? Value(k) : v);
        }
        return Value::list(std::move(out));
    }
    return std::nullopt;
}

Value range(const CallArgs& args) {
    args.check("range", 3, {});
    if (args.positional.empty()) throw EvalError("range expected at least 1 argument, got 0");
    int64_t start = 0;
    int64_t stop = 0;
    int64_t step = 1;
    if (args.positional.size() == 1) {
        stop = int_arg(args.positional[0], "range");
    } else {
        start = int_arg(args.positional[0], "range");
        stop = int_arg(args.positional[1], "range");
        if (args.positional.size() == 3) step = int_arg(args.positional[2], "range");
    }
    if (step == 0) throw EvalError("range() arg 3 must not be zero");
    // Unsigned differences cannot overflow: hi > lo, so hi - lo fits in 64 bits.
    const bool up = step > 0;
    const int64_t lo = up ? start : stop;
    const int64_t hi = up ? stop : start;
    const uint64_t span = hi > lo ? static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo) : 0;
    const uint64_t magnitude = up ? static_cast<uint64_t>(step) : 0 - static_cast<uint64_t>(step);
    const uint64_t count = span == 0 ? 0 : (span - 1) / magnitude + 1;
    if (count > static_cast<uint64_t>(kMaxRange)) {
        throw EvalError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    }
    std::vector<Value> items;
    for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) items.emplace_back(start + i * step);
    return Value::list(std::move(items));
}

// dict(mapping, **kwargs) and namespace(mapping, **kwargs) take their entries the same way.
Entries mapping_entries(const CallArgs& args, std::string_view callee) {
    if (args.positional.size() > 1) {
        throw EvalError(fmt::format("{} expected at most 1 argument, got {}", callee, args.positional.size()));
    }
    Entries entries;
    const auto put = [&](const std::string& k, const Value& v) {
        for (auto& e : entries) {
            if (e.first == k) {
                e.second = v;
                return;
            }
        }
        entries.emplace_back(k, v);
    };
    if (!args.positional.empty()) {
        const Value& m = args.positional[0];
        if (!m.is_dict()) throw EvalError(fmt::format("{}: the argument must be a mapping", callee));
        for (const auto& [k, v] : m.as_dict().items) put(k, v);
    }
    for (const auto& [k, v] : args.keyword) put(k, v);
    return entries;
}

std::string strftime_now(const CallArgs& args, const Clock& clock) {
    args.check("strftime_now", 1, {});
    if (args.positional.empty()) throw EvalError("strftime_now() missing 1 required positional argument: 'format'");
    const std::string& format = str_arg(args.positional[0], "strftime_now");
    if (format.empty()) return "";
    const std::tm now = clock();
    for (size_t size = 64; size <= 65536; size *= 4) {
        std::string buf(size, '\0');
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"  // the template supplies the format, as in Python
        const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &now);
#pragma GCC diagnostic pop
        if (n > 0) {
            buf.resize(n);
            return buf;
        }
    }
    return "";
}

}  // namespace

const Value* CallArgs::get(size_t position, std::string_view name) const {
    if (position < positional.size()) return &positional[position];
    if (name.empty()) return nullptr;
    for (const auto& [k, v] : keyword) {
        if (k == name) return &v;
    }
    return nullptr;
}

void CallArgs::check(std::string_view callee, size_t max_positional,
                     std::initializer_list<std::string_view> names) const {
    if (positional.size() > max_positional) {
        throw EvalError(fmt::format("{}() takes at most {} positional argument{} ({} given)", callee, max_positional,
                                    max_positional == 1 ? "" : "s", positional.size()));
    }
    for (const auto& [k, _] : keyword) {
        size_t index = 0;
        bool known = false;
        for (const auto n : names) {
            if (n == k) {
                known = true;
                break;
            }
            ++index;
        }
        if (!known) throw EvalError(fmt::format("{}() got an unexpected keyword argument '{}'", callee, k));
        if (index < positional.size()) {
            throw EvalError(fmt::format("{}() got multiple values for argument '{}'", callee, k));
        }
    }
}

std::optional<Value> call_method(const Value& self, std::string_view name, const CallArgs& args) {
    if (self.is_string()) return string_method(self.as_string(), name, args);
    if (self.is_dict()) return dict_method(self, name, args);
    if (self.kind() == Value::Kind::object && self.as_object().kind == ObjectKind::loop && name == "cycle") {
        args.check("cycle", SIZE_MAX, {});
        if (args.positional.empty()) throw EvalError("no items for cycling given");
        const Value* index0 = self.as_object().find("index0");
        const auto i = static_cast<size_t>(index0 ? index0->as_int() : 0);
        return args.positional[i % args.positional.size()];
    }
    return std::nullopt;
}

Value call_builtin(Builtin b, const CallArgs& args, const Clock& clock) {
    switch (b) {
        case Builtin::range: return range(args);
        case Builtin::make_namespace:
            return Value::object(ObjectKind::namespace_object, mapping_entries(args, "namespace"));
        case Builtin::make_dict: return Value::dict(mapping_entries(args, "dict"));
        case Builtin::raise_exception:
            args.check("raise_exception", 1, {});
            throw EvalError(args.positional.empty() ? std::string() : to_str(args.positional[0]));
        case Builtin::strftime_now: return strftime_now(args, clock);
    }
    throw EvalError("unknown function");
}

}  // namespace tps::chat
