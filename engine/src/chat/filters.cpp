// jinja2's filters as chat templates use them, each following jinja2/filters.py (3.1): the quirks
// are kept on purpose (|int parses "42.23" as 42, |first of an empty list is Undefined, |trim and
// |upper print their input first), because the output must be byte-identical to jinja2's.
#include "builtins.h"

#include "operators.h"
#include "pystr.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace tps::chat {
namespace {

struct FilterName {
    std::string_view name;
    FilterId id;
};

constexpr FilterName kFilters[] = {
    {"abs", FilterId::abs},         {"capitalize", FilterId::capitalize}, {"count", FilterId::length},
    {"d", FilterId::default_value}, {"default", FilterId::default_value}, {"first", FilterId::first},
    {"float", FilterId::float_value}, {"indent", FilterId::indent},      {"int", FilterId::int_value},
    {"items", FilterId::items},     {"join", FilterId::join},             {"last", FilterId::last},
    {"length", FilterId::length},   {"list", FilterId::list},             {"lower", FilterId::lower},
    {"map", FilterId::map},         {"reject", FilterId::reject},         {"rejectattr", FilterId::rejectattr},
    {"replace", FilterId::replace}, {"reverse", FilterId::reverse},       {"select", FilterId::select},
    {"selectattr", FilterId::selectattr}, {"string", FilterId::string},   {"title", FilterId::title},
    {"tojson", FilterId::tojson},   {"trim", FilterId::trim},             {"upper", FilterId::upper},
};

// jinja2's other builtin filters: named in errors as unsupported rather than unknown.
constexpr std::string_view kOtherJinjaFilters[] = {
    "attr", "batch", "center", "dictsort", "e", "escape", "filesizeformat", "forceescape", "format", "groupby",
    "max", "min", "pprint", "random", "round", "safe", "slice", "sort", "striptags", "sum", "truncate", "unique",
    "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
};

Value arg_or(const CallArgs& args, size_t position, std::string_view name, const Value& fallback) {
    const Value* v = args.get(position, name);
    return v ? *v : fallback;
}

// make_attrgetter: "a.b" and "0" walk get_item part by part; `fallback` replaces an Undefined.
Value lookup_attribute(const Value& item, const Value& attribute, const Value* fallback) {
    Value current = item;
    if (attribute.is_string()) {
        for (const auto& part : pystr::split(attribute.as_string(), std::string_view("."), -1)) {
            int64_t index = 0;
            const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), index);
            const bool numeric = !part.empty() && ec == std::errc{} && end == part.data() + part.size();
            current = get_item(current, numeric ? Value(index) : Value(part));
        }
    } else {
        current = get_item(current, attribute);
    }
    if (fallback && current.is_undefined()) return *fallback;
    return current;
}

// select / reject / selectattr / rejectattr: keep the items whose test result equals `keep`.
Value select_items(const Value& seq, const CallArgs& args, bool by_attribute, bool keep) {
    size_t offset = 0;
    const Value* attribute = nullptr;
    if (by_attribute) {
        if (args.positional.empty()) throw EvalError("Missing parameter for attribute name");
        attribute = &args.positional[0];
        offset = 1;
    }
    std::optional<TestId> test;
    CallArgs test_args;
    if (args.positional.size() > offset) {
        const Value& name = args.positional[offset];
        if (!name.is_string()) throw EvalError("the test of select/reject must be named by a string");
        test = find_test(name.as_string());
        if (!test) throw EvalError(unsupported_test_message(name.as_string()));
        test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(offset) + 1,
                                    args.positional.end());
        test_args.keyword = args.keyword;
    }
    std::vector<Value> out;
    if (!truthy(seq)) return Value::list({});  // jinja2 tests `if value:` before iterating
    for (const auto& item : iterate(seq)) {
        const Value subject = attribute ? lookup_attribute(item, *attribute, nullptr) : item;
        const bool passed = test ? apply_test(*test, subject, test_args) : truthy(subject);
        if (passed == keep) out.push_back(item);
    }
    return Value::list(std::move(out));
}

Value map_items(const Value& seq, const CallArgs& args) {
    std::vector<Value> out;
    if (!truthy(seq)) return Value::list({});  // as jinja2, before even looking at the arguments
    if (args.positional.empty()) {
        const Value* attribute = args.get(99, "attribute");
        if (!attribute) throw EvalError("map requires a filter argument");
        args.check("map", 0, {"attribute", "default"});
        const Value* fallback = args.get(99, "default");
        for (const auto& item : iterate(seq)) out.push_back(lookup_attribute(item, *attribute, fallback));
        return Value::list(std::move(out));
    }
    const Value& name = args.positional[0];
    if (!name.is_string()) throw EvalError("map requires a filter name");
    const auto filter = find_filter(name.as_string());
    if (!filter) throw EvalError(unsupported_filter_message(name.as_string()));
    CallArgs rest{{args.positional.begin() + 1, args.positional.end()}, args.keyword};
    for (const auto& item : iterate(seq)) out.push_back(apply_filter(*filter, item, rest));
    return Value::list(std::move(out));
}

std::optional<double> parse_python_float(std::string_view text) {
    const std::string s = pystr::strip(text, std::nullopt, true, true);
    std::string_view body(s);
    if (!body.empty() && body.front() == '+') body.remove_prefix(1);
    const std::string lowered = pystr::lower(body);
    if (lowered == "inf" || lowered == "infinity" || lowered == "-inf" || lowered == "-infinity") {
        return lowered.front() == '-' ? -HUGE_VAL : HUGE_VAL;
    }
    if (lowered == "nan" || lowered == "-nan") return std::nan("");
    double d = 0;
    const auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), d);
    if (body.empty() || ec != std::errc{} || end != body.data() + body.size()) return std::nullopt;
    return d;
}

Value to_int(const Value& v, const Value& fallback) {
    if (v.is_integral()) return v.as_int();
    if (v.kind() == Value::Kind::floating) {
        const double d = v.as_float();
        if (!std::isfinite(d) || std::fabs(d) >= 9.2e18) return fallback;
        return static_cast<int64_t>(d);  // int() truncates toward zero
    }
    if (!v.is_string()) return fallback;
    const std::string s = pystr::strip(v.as_string(), std::nullopt, true, true);
    std::string_view body(s);
    if (!body.empty() && body.front() == '+') body.remove_prefix(1);
    int64_t i = 0;
    const auto [end, ec] = std::from_chars(body.data(), body.data() + body.size(), i);
    if (!body.empty() && ec == std::errc{} && end == body.data() + body.size()) return i;
    if (const auto d = parse_python_float(v.as_string())) return to_int(Value(*d), fallback);  // "42.23" -> 42
    return fallback;
}

Value indent(const Value& input, const CallArgs& args) {
    args.check("indent", 3, {"width", "first", "blank"});
    const Value width = arg_or(args, 0, "width", Value(4));
    std::string pad;
    if (width.is_string()) {
        pad = width.as_string();
    } else if (width.is_integral()) {
        pad.assign(static_cast<size_t>(std::max<int64_t>(0, width.as_int())), ' ');
    } else {
        throw EvalError("indent: width must be an integer or a string");
    }
    // jinja2 appends "\n" to its input and splits lines: only a str has both.
    if (input.is_undefined()) raise_undefined(input);
    if (input.is_list()) throw EvalError(fmt::format("'{}' object has no attribute 'splitlines'", type_name(input)));
    if (!input.is_string()) {
        throw EvalError(fmt::format("unsupported operand type(s) for +=: '{}' and 'str'", type_name(input)));
    }
    const bool first = truthy(arg_or(args, 1, "first", Value(false)));
    const bool blank = truthy(arg_or(args, 2, "blank", Value(false)));
    auto lines = pystr::splitlines(input.as_string() + "\n");
    std::string out;
    if (blank) {
        for (size_t i = 0; i < lines.size(); ++i) {
            if (i) out += "\n" + pad;
            out += lines[i];
        }
    } else {
        out = lines.empty() ? "" : lines.front();
        for (size_t i = 1; i < lines.size(); ++i) {
            out += '\n';
            if (!lines[i].empty()) out += pad;
            out += lines[i];
        }
    }
    return first ? pad + out : out;
}

Value tojson(const Value& input, const CallArgs& args) {
    args.check("tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonStyle style;
    style.ensure_ascii = truthy(arg_or(args, 0, "ensure_ascii", Value(false)));
    const Value indent_arg = arg_or(args, 1, "indent", Value::none());
    if (indent_arg.is_string()) {
        style.indent = indent_arg.as_string();
    } else if (indent_arg.is_integral()) {
        style.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent_arg.as_int())), ' ');
    } else if (!indent_arg.is_none()) {
        throw EvalError("tojson: indent must be an integer, a string or None");
    }
    if (style.indent) style.item_separator.pop_back();  // json.dumps: "," instead of ", " when indenting
    const Value separators = arg_or(args, 2, "separators", Value::none());
    if (!separators.is_none()) {
        if (!separators.is_list() || separators.as_list().items.size() != 2 ||
            !separators.as_list().items[0].is_string() || !separators.as_list().items[1].is_string()) {
            throw EvalError("tojson: separators must be a pair of strings");
        }
        style.item_separator = separators.as_list().items[0].as_string();
        style.key_separator = separators.as_list().items[1].as_string();
    }
    style.sort_keys = truthy(arg_or(args, 3, "sort_keys", Value(false)));
    return json_dumps(input, style);
}

Value first_or_last(const Value& input, bool first) {
    if (input.is_dict() || input.is_list() || input.is_string() || input.is_undefined()) {
        const auto items = iterate(input);
        if (!items.empty()) return first ? items.front() : items.back();
        return Value::undefined(first ? "No first item, sequence was empty." : "No last item, sequence was empty.");
    }
    throw EvalError(fmt::format("'{}' object is not {}", type_name(input), first ? "iterable" : "reversible"));
}

}  // namespace

std::optional<FilterId> find_filter(std::string_view name) {
    for (const auto& f : kFilters) {
        if (f.name == name) return f.id;
    }
    return std::nullopt;
}

std::string unsupported_filter_message(std::string_view name) {
    const bool jinja_has_it =
        std::find(std::begin(kOtherJinjaFilters), std::end(kOtherJinjaFilters), name) != std::end(kOtherJinjaFilters);
    return jinja_has_it ? fmt::format("the filter '{}' is not supported by tpserve's chat templates", name)
                        : fmt::format("No filter named '{}'.", name);
}

Value apply_filter(FilterId id, const Value& input, const CallArgs& args) {
    switch (id) {
        case FilterId::abs:
            args.check("abs", 0, {});
            if (input.kind() == Value::Kind::floating) return std::fabs(input.as_float());
            if (input.is_integral()) return input.as_int() < 0 ? negate(input) : Value(input.as_int());
            throw EvalError(fmt::format("bad operand type for abs(): '{}'", type_name(input)));
        case FilterId::capitalize: args.check("capitalize", 0, {}); return pystr::capitalize(to_str(input));
        case FilterId::default_value: {
            args.check("default", 2, {"default_value", "boolean"});
            const Value fallback = arg_or(args, 0, "default_value", Value(""));
            const bool boolean = truthy(arg_or(args, 1, "boolean", Value(false)));
            return input.is_undefined() || (boolean && !truthy(input)) ? fallback : input;
        }
        case FilterId::first: args.check("first", 0, {}); return first_or_last(input, true);
        case FilterId::last: args.check("last", 0, {}); return first_or_last(input, false);
        case FilterId::float_value: {
            args.check("float", 1, {"default"});
            const Value fallback = arg_or(args, 0, "default", Value(0.0));
            if (input.is_undefined()) raise_undefined(input);  // float(Undefined) raises
            if (input.is_number()) return input.as_float();
            if (input.is_string()) {
                if (const auto d = parse_python_float(input.as_string())) return *d;
            }
            return fallback;
        }
        case FilterId::int_value: {
            args.check("int", 2, {"default", "base"});
            if (args.get(1, "base")) throw EvalError("int: the base argument is not supported here");
            if (input.is_undefined()) raise_undefined(input);  // int(Undefined) raises
            return to_int(input, arg_or(args, 0, "default", Value(0)));
        }
        case FilterId::indent: return indent(input, args);
        case FilterId::items: {
            args.check("items", 0, {});
            if (input.is_undefined()) return Value::list({});
            if (!input.is_dict()) throw EvalError("Can only get item pairs from a mapping.");
            std::vector<Value> pairs;
            for (const auto& [k, v] : input.as_dict().items) pairs.push_back(Value::list({Value(k), v}, true));
            return Value::list(std::move(pairs));
        }
        case FilterId::join: {
            args.check("join", 2, {"d", "attribute"});
            const std::string sep = to_str(arg_or(args, 0, "d", Value("")));
            const Value* attribute = args.get(1, "attribute");
            std::string out;
            bool first = true;
            for (const auto& item : iterate(input)) {
                if (!first) out += sep;
                first = false;
                const bool by_attribute = attribute && !attribute->is_none();
                out += to_str(by_attribute ? lookup_attribute(item, *attribute, nullptr) : item);
            }
            return out;
        }
        case FilterId::length: args.check("length", 0, {}); return length(input);
        case FilterId::list: args.check("list", 0, {}); return Value::list(iterate(input));
        case FilterId::lower: args.check("lower", 0, {}); return pystr::lower(to_str(input));
        case FilterId::upper: args.check("upper", 0, {}); return pystr::upper(to_str(input));
        case FilterId::map: return map_items(input, args);
        case FilterId::select: return select_items(input, args, false, true);
        case FilterId::reject: return select_items(input, args, false, false);
        case FilterId::selectattr: return select_items(input, args, true, true);
        case FilterId::rejectattr: return select_items(input, args, true, false);
        case FilterId::replace: {
            args.check("replace", 3, {"old", "new", "count"});
            const Value* old_text = args.get(0, "old");
            const Value* new_text = args.get(1, "new");
            if (!old_text || !new_text) throw EvalError("replace needs the text to replace and its replacement");
            const Value count = arg_or(args, 2, "count", Value::none());
            return pystr::replace(to_str(input), to_str(*old_text), to_str(*new_text),
                                  count.is_none() ? -1 : count.is_integral() ? count.as_int() : -1);
        }
        case FilterId::reverse: {
            args.check("reverse", 0, {});
            if (input.is_string()) return slice(input, Value::none(), Value::none(), Value(-1));
            auto items = iterate(input);
            std::reverse(items.begin(), items.end());
            return Value::list(std::move(items));
        }
        case FilterId::string: args.check("string", 0, {}); return to_str(input);
        case FilterId::title: args.check("title", 0, {}); return pystr::jinja_title(to_str(input));
        case FilterId::tojson: return tojson(input, args);
        case FilterId::trim: {
            args.check("trim", 1, {"chars"});
            const Value chars = arg_or(args, 0, "chars", Value::none());
            const std::string text = to_str(input);
            if (chars.is_none()) return pystr::strip(text, std::nullopt, true, true);
            if (!chars.is_string()) throw EvalError("strip arg must be None or str");
            return pystr::strip(text, std::string_view(chars.as_string()), true, true);
        }
    }
    throw EvalError("unknown filter");
}

}  // namespace tps::chat
