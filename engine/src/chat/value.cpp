// Python semantics of template values: truthiness, ==, str(), repr() and float formatting exactly as
// CPython prints them, since a chat template's output is compared byte for byte with jinja2's.
#include "value.h"

#include "pystr.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace tps::chat {
namespace {

const Value* find_entry(const Entries& entries, std::string_view key) {
    for (const auto& [k, v] : entries) {
        if (k == key) return &v;
    }
    return nullptr;
}

std::string repr_entries(const Entries& entries) {
    std::string out = "{";
    for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += ", ";
        out += pystr::repr(entries[i].first) + ": " + to_repr(entries[i].second);
    }
    return out + "}";
}

const char* builtin_name(Builtin b) {
    switch (b) {
        case Builtin::range: return "range";
        case Builtin::make_namespace: return "namespace";
        case Builtin::make_dict: return "dict";
        case Builtin::raise_exception: return "raise_exception";
        case Builtin::strftime_now: return "strftime_now";
    }
    return "function";
}

}  // namespace

thread_local int nesting_depth = 0;

NestingGuard::NestingGuard() {
    if (++nesting_depth > kMaxNesting) {
        --nesting_depth;
        throw EvalError("a value is nested more than 1000 levels deep");
    }
}

NestingGuard::~NestingGuard() { --nesting_depth; }

const Value* DictData::find(std::string_view key) const { return find_entry(items, key); }

const Value* ObjectData::find(std::string_view name) const { return find_entry(attributes, name); }

void ObjectData::set(std::string_view name, Value value) {
    for (auto& [k, v] : attributes) {
        if (k == name) {
            v = std::move(value);
            return;
        }
    }
    attributes.emplace_back(std::string(name), std::move(value));
}

Value Value::undefined(std::string hint) {
    Value v;
    v.v_ = UndefinedTag{std::move(hint)};
    return v;
}

Value Value::none() {
    Value v;
    v.v_ = NoneTag{};
    return v;
}

namespace {

int nesting_of(const Value& v) {
    if (v.is_list()) return v.as_list().depth;
    if (v.is_dict()) return v.as_dict().depth;
    return 0;
}

int container_depth(int deepest_child) {
    if (deepest_child >= kMaxNesting) throw EvalError("a value is nested more than 1000 levels deep");
    return deepest_child + 1;
}

}  // namespace

Value Value::list(std::vector<Value> items, bool is_tuple) {
    int deepest = 0;
    for (const auto& item : items) deepest = std::max(deepest, nesting_of(item));
    Value v;
    v.v_ = std::make_shared<const ListData>(ListData{std::move(items), is_tuple, container_depth(deepest)});
    return v;
}

Value Value::dict(Entries items) {
    int deepest = 0;
    for (const auto& [_, item] : items) deepest = std::max(deepest, nesting_of(item));
    Value v;
    v.v_ = std::make_shared<const DictData>(DictData{std::move(items), container_depth(deepest)});
    return v;
}

Value Value::object(ObjectKind kind, Entries attributes) {
    Value v;
    v.v_ = std::make_shared<ObjectData>(ObjectData{kind, std::move(attributes)});
    return v;
}

Value Value::builtin(Builtin b) {
    Value v;
    v.v_ = b;
    return v;
}

int64_t Value::as_int() const {
    if (kind() == Kind::boolean) return as_bool() ? 1 : 0;
    return std::get<int64_t>(v_);
}

double Value::as_float() const {
    if (kind() == Kind::floating) return std::get<double>(v_);
    return static_cast<double>(as_int());
}

bool Value::same(const Value& other) const {
    if (kind() != other.kind()) return false;
    switch (kind()) {
        case Kind::undefined: return false;
        case Kind::none: return true;
        case Kind::boolean: return as_bool() == other.as_bool();
        case Kind::integer: return as_int() == other.as_int();  // CPython caches small ints; close enough
        case Kind::floating: return false;
        case Kind::string: return as_string() == other.as_string();
        case Kind::list: return &as_list() == &other.as_list();
        case Kind::dict: return &as_dict() == &other.as_dict();
        case Kind::object: return &as_object() == &other.as_object();
        case Kind::builtin: return as_builtin() == other.as_builtin();
    }
    return false;
}

void raise_undefined(const Value& v) {
    const std::string& hint = v.undefined_hint();
    throw EvalError(hint.empty() ? std::string("a value is undefined") : hint);
}

bool truthy(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::undefined:
        case Value::Kind::none: return false;
        case Value::Kind::boolean: return v.as_bool();
        case Value::Kind::integer: return v.as_int() != 0;
        case Value::Kind::floating: return v.as_float() != 0.0;
        case Value::Kind::string: return !v.as_string().empty();
        case Value::Kind::list: return !v.as_list().items.empty();
        case Value::Kind::dict: return !v.as_dict().items.empty();
        case Value::Kind::object:
        case Value::Kind::builtin: return true;
    }
    return false;
}

bool equal(const Value& a, const Value& b) {
    const NestingGuard guard;
    if (a.is_number() && b.is_number()) {
        if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
        return a.as_float() == b.as_float();
    }
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case Value::Kind::undefined:
        case Value::Kind::none: return true;  // jinja2: Undefined == Undefined
        case Value::Kind::boolean:
        case Value::Kind::integer:
        case Value::Kind::floating: return false;  // handled above
        case Value::Kind::string: return a.as_string() == b.as_string();
        case Value::Kind::list: {
            const auto& x = a.as_list();
            const auto& y = b.as_list();
            if (x.is_tuple != y.is_tuple || x.items.size() != y.items.size()) return false;
            for (size_t i = 0; i < x.items.size(); ++i) {
                if (!equal(x.items[i], y.items[i])) return false;
            }
            return true;
        }
        case Value::Kind::dict: {
            const auto& x = a.as_dict();
            const auto& y = b.as_dict();
            if (x.items.size() != y.items.size()) return false;
            for (const auto& [k, v] : x.items) {
                const Value* other = y.find(k);
                if (!other || !equal(v, *other)) return false;
            }
            return true;
        }
        case Value::Kind::object:
        case Value::Kind::builtin: return a.same(b);
    }
    return false;
}

std::string format_float(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    // Shortest round-trip digits, then CPython's repr layout: positional for 1e-4 <= |d| < 1e16.
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
    const std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
    const size_t e = sci.find('e');
    std::string_view mantissa = sci.substr(0, e);
    const bool negative = !mantissa.empty() && mantissa.front() == '-';
    if (negative) mantissa.remove_prefix(1);
    std::string digits;
    for (const char c : mantissa) {
        if (c != '.') digits += c;
    }
    int exponent = 0;
    std::from_chars(sci.data() + e + 1 + (sci[e + 1] == '+' ? 1 : 0), sci.data() + sci.size(), exponent);
    const int decpt = exponent + 1;  // digits[0] sits just before the decimal point times 10^decpt
    std::string out = negative ? "-" : "";
    const auto n = static_cast<int>(digits.size());
    const auto d_size = static_cast<size_t>(n);
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out += "0.";
            out.append(static_cast<size_t>(-decpt), '0');
            out += digits;
        } else if (decpt >= n) {
            out += digits;
            out.append(static_cast<size_t>(decpt) - d_size, '0');
            out += ".0";
        } else {
            out.append(digits, 0, static_cast<size_t>(decpt));
            out += '.';
            out.append(digits, static_cast<size_t>(decpt));
        }
        return out;
    }
    out += digits[0];
    if (n > 1) {
        out += '.';
        out.append(digits, 1);
    }
    const int shown = decpt - 1;
    out += fmt::format("e{}{:02d}", shown < 0 ? '-' : '+', shown < 0 ? -shown : shown);
    return out;
}

std::string to_str(const Value& v) {
    if (v.is_undefined()) return "";
    if (v.is_string()) return v.as_string();
    if (v.kind() != Value::Kind::object) return to_repr(v);
    const ObjectData& object = v.as_object();
    if (object.kind == ObjectKind::namespace_object) return "<Namespace " + repr_entries(object.attributes) + ">";
    const Value* index = object.find("index");
    const Value* length = object.find("length");
    return fmt::format("<LoopContext {}/{}>", index ? to_str(*index) : "?", length ? to_str(*length) : "?");
}

std::string to_repr(const Value& v) {
    const NestingGuard guard;
    switch (v.kind()) {
        case Value::Kind::undefined: return "Undefined";
        case Value::Kind::none: return "None";
        case Value::Kind::boolean: return v.as_bool() ? "True" : "False";
        case Value::Kind::integer: return std::to_string(v.as_int());
        case Value::Kind::floating: return format_float(v.as_float());
        case Value::Kind::string: return pystr::repr(v.as_string());
        case Value::Kind::list: {
            const auto& list = v.as_list();
            std::string out = list.is_tuple ? "(" : "[";
            for (size_t i = 0; i < list.items.size(); ++i) {
                if (i) out += ", ";
                out += to_repr(list.items[i]);
            }
            if (list.is_tuple && list.items.size() == 1) out += ",";
            return out + (list.is_tuple ? ")" : "]");
        }
        case Value::Kind::dict: return repr_entries(v.as_dict().items);
        case Value::Kind::object: return to_str(v);
        case Value::Kind::builtin: return fmt::format("<built-in function {}>", builtin_name(v.as_builtin()));
    }
    return "";
}

std::string type_name(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::undefined: return "Undefined";
        case Value::Kind::none: return "NoneType";
        case Value::Kind::boolean: return "bool";
        case Value::Kind::integer: return "int";
        case Value::Kind::floating: return "float";
        case Value::Kind::string: return "str";
        case Value::Kind::list: return v.as_list().is_tuple ? "tuple" : "list";
        case Value::Kind::dict: return "dict";
        case Value::Kind::object:
            return v.as_object().kind == ObjectKind::namespace_object ? "Namespace" : "LoopContext";
        case Value::Kind::builtin: return "builtin_function_or_method";
    }
    return "object";
}

std::string object_type_repr(const Value& v) {
    if (v.is_none()) return "None";
    if (v.kind() == Value::Kind::object) {
        return v.as_object().kind == ObjectKind::namespace_object ? "jinja2.utils.Namespace object"
                                                                   : "jinja2.runtime.LoopContext object";
    }
    return type_name(v) + " object";
}

namespace {

constexpr int kMaxJsonDepth = 512;  // deeper context JSON is an error, not a stack overflow

Value from_json_at(const nlohmann::ordered_json& j, int depth) {
    using Type = nlohmann::ordered_json::value_t;
    if (depth > kMaxJsonDepth) throw EvalError("the context is nested more than 512 levels deep");
    switch (j.type()) {
        case Type::null:
        case Type::discarded: return Value::none();
        case Type::boolean: return Value(j.get<bool>());
        case Type::number_integer: return Value(j.get<int64_t>());
        case Type::number_unsigned: {
            const auto u = j.get<uint64_t>();
            if (u > static_cast<uint64_t>(INT64_MAX)) {
                throw EvalError(fmt::format("the integer {} in the context does not fit in 64 bits", u));
            }
            return Value(static_cast<int64_t>(u));
        }
        case Type::number_float: return Value(j.get<double>());
        case Type::string: return Value(j.get<std::string>());
        case Type::array: {
            std::vector<Value> items;
            items.reserve(j.size());
            for (const auto& item : j) items.push_back(from_json_at(item, depth + 1));
            return Value::list(std::move(items));
        }
        case Type::object: {
            Entries entries;
            entries.reserve(j.size());
            for (const auto& [k, item] : j.items()) entries.emplace_back(k, from_json_at(item, depth + 1));
            return Value::dict(std::move(entries));
        }
        case Type::binary: throw EvalError("binary JSON values cannot be passed to a chat template");
    }
    return Value::none();
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) { return from_json_at(j, 0); }

}  // namespace tps::chat
