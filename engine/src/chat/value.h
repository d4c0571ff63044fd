// Values of the chat-template interpreter: the Python objects a Jinja template sees (None, bool, int,
// float, str, list and tuple, dict, jinja2's Undefined, namespace() and loop objects, builtin
// functions), with Python's truthiness, equality, str() and repr(). Lists and dicts never change once
// built (transformers renders in jinja2's ImmutableSandboxedEnvironment), so copies share them; only
// namespace objects change, through {% set ns.attr = ... %}.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tps::chat {

// A failed Python operation (TypeError, jinja2's UndefinedError, raise_exception(), ...). The
// evaluator adds the template's name and line and rethrows it as tps::InputError.
class EvalError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Value;
using Entries = std::vector<std::pair<std::string, Value>>;  // a dict's items in insertion order

// Lists and dicts know how deeply they nest, so that no template can build one deeper than
// kMaxNesting (destroying it would recurse as deep).
constexpr int kMaxNesting = 1000;

struct ListData {
    std::vector<Value> items;
    bool is_tuple = false;
    int depth = 1;
};

struct DictData {
    Entries items;
    int depth = 1;
    const Value* find(std::string_view key) const;
};

enum class ObjectKind { namespace_object, loop };

// namespace() objects and the `loop` variable: attribute bags; a namespace changes in place.
struct ObjectData {
    ObjectKind kind;
    Entries attributes;
    const Value* find(std::string_view name) const;
    void set(std::string_view name, Value value);
};

// The functions in a template's global scope.
enum class Builtin { range, make_namespace, make_dict, raise_exception, strftime_now };

class Value {
public:
    enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, object, builtin };

    Value() = default;  // undefined
    Value(bool b) : v_(b) {}
    Value(int64_t i) : v_(i) {}
    Value(int i) : v_(int64_t{i}) {}
    Value(double d) : v_(d) {}
    Value(std::string s) : v_(std::move(s)) {}
    Value(const char* s) : v_(std::string(s)) {}
    Value(std::string_view s) : v_(std::string(s)) {}

    // jinja2's Undefined; `hint` is the message an error about it carries ("'x' is undefined").
    static Value undefined(std::string hint);
    static Value none();
    static Value list(std::vector<Value> items, bool is_tuple = false);
    static Value dict(Entries items);
    static Value object(ObjectKind kind, Entries attributes);
    static Value builtin(Builtin b);

    Kind kind() const { return static_cast<Kind>(v_.index()); }
    bool is_undefined() const { return kind() == Kind::undefined; }
    bool is_none() const { return kind() == Kind::none; }
    bool is_string() const { return kind() == Kind::string; }
    bool is_list() const { return kind() == Kind::list; }
    bool is_dict() const { return kind() == Kind::dict; }
    bool is_integral() const { return kind() == Kind::integer || kind() == Kind::boolean; }  // Python int
    bool is_number() const { return is_integral() || kind() == Kind::floating; }             // numbers.Number

    bool as_bool() const { return std::get<bool>(v_); }
    int64_t as_int() const;    // bool or int
    double as_float() const;   // any number
    const std::string& as_string() const { return std::get<std::string>(v_); }
    const ListData& as_list() const { return *std::get<ListPtr>(v_); }
    const DictData& as_dict() const { return *std::get<DictPtr>(v_); }
    ObjectData& as_object() const { return *std::get<ObjectPtr>(v_); }
    Builtin as_builtin() const { return std::get<Builtin>(v_); }
    const std::string& undefined_hint() const { return std::get<UndefinedTag>(v_).hint; }

    bool same(const Value& other) const;  // Python's `is`

private:
    struct UndefinedTag {
        std::string hint;
    };
    struct NoneTag {};
    using ListPtr = std::shared_ptr<const ListData>;
    using DictPtr = std::shared_ptr<const DictData>;
    using ObjectPtr = std::shared_ptr<ObjectData>;
    // Alternatives in the order of Kind.
    std::variant<UndefinedTag, NoneTag, bool, int64_t, double, std::string, ListPtr, DictPtr, ObjectPtr, Builtin>
        v_;
};

// Held while recursing into a value (repr, ==, <): a namespace that holds itself is an error past
// kMaxNesting levels, not a stack overflow.
class NestingGuard {
public:
    NestingGuard();
    ~NestingGuard();
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;
};

// Throws jinja2's UndefinedError for an operation on `v` (which is undefined).
[[noreturn]] void raise_undefined(const Value& v);

bool truthy(const Value& v);
bool equal(const Value& a, const Value& b);  // Python ==
std::string to_str(const Value& v);          // str(v): what {{ v }} prints
std::string to_repr(const Value& v);         // repr(v): how v prints inside a list or dict
std::string type_name(const Value& v);       // type(v).__name__, for error messages
std::string object_type_repr(const Value& v);  // jinja2's "dict object", for undefined hints
std::string format_float(double d);          // float.__repr__: 1.0, 0.1, 1e+16, 1e-05

// JSON as Python's json.loads gives it; objects keep their key order.
Value from_json(const nlohmann::ordered_json& j);

}  // namespace tps::chat
