// Python operators over template values (see operators.h). Integers are 64-bit: a result Python
// would grow past that is an error here rather than a silently wrong number.
#include "operators.h"

#include "pystr.h"

#include <fmt/format.h>

#include <cmath>

namespace tps::chat {
namespace {

// Repetition ('ab' * n, [x] * n) is capped so a hostile template cannot exhaust memory.
constexpr int64_t kMaxRepeatBytes = int64_t{1} << 26;

const char* op_symbol(BinaryOp op) {
    switch (op) {
        case BinaryOp::add: return "+";
        case BinaryOp::sub: return "-";
        case BinaryOp::mul: return "*";
        case BinaryOp::div: return "/";
        case BinaryOp::floordiv: return "//";
        case BinaryOp::mod: return "%";
        case BinaryOp::pow: return "** or pow()";
    }
    return "?";
}

const char* op_symbol(CompareOp op) {
    switch (op) {
        case CompareOp::eq: return "==";
        case CompareOp::ne: return "!=";
        case CompareOp::lt: return "<";
        case CompareOp::le: return "<=";
        case CompareOp::gt: return ">";
        case CompareOp::ge: return ">=";
        case CompareOp::in: return "in";
        case CompareOp::not_in: return "not in";
    }
    return "?";
}

[[noreturn]] void unsupported(BinaryOp op, const Value& a, const Value& b) {
    throw EvalError(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op_symbol(op), type_name(a),
                                type_name(b)));
}

[[noreturn]] void overflow() {
    throw EvalError("integer overflow: chat templates compute with 64-bit integers here");
}

// x op y for + - *, or the overflow error.
template <class Op>
int64_t checked(Op op, int64_t x, int64_t y) {
    int64_t r = 0;
    if (op(x, y, &r)) overflow();
    return r;
}
bool add_overflow(int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); }
bool sub_overflow(int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); }
bool mul_overflow(int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); }

Value int_op(BinaryOp op, int64_t x, int64_t y) {
    switch (op) {
        case BinaryOp::add: return checked(add_overflow, x, y);
        case BinaryOp::sub: return checked(sub_overflow, x, y);
        case BinaryOp::mul: return checked(mul_overflow, x, y);
        case BinaryOp::div:
            if (y == 0) throw EvalError("division by zero");
            return static_cast<double>(x) / static_cast<double>(y);
        case BinaryOp::floordiv:
        case BinaryOp::mod: {
            if (y == 0) {
                throw EvalError(op == BinaryOp::mod ? "integer modulo by zero"
                                                    : "integer division or modulo by zero");
            }
            if (x == INT64_MIN && y == -1) {
                if (op == BinaryOp::mod) return int64_t{0};
                overflow();
            }
            int64_t q = x / y;
            int64_t m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) {  // Python floors toward negative infinity
                q -= 1;
                m += y;
            }
            return op == BinaryOp::mod ? m : q;
        }
        case BinaryOp::pow: {
            if (y < 0) {
                if (x == 0) throw EvalError("0.0 cannot be raised to a negative power");
                return std::pow(static_cast<double>(x), static_cast<double>(y));
            }
            if (x == 0 || x == 1) return y == 0 ? int64_t{1} : x;
            if (x == -1) return y % 2 ? int64_t{-1} : int64_t{1};
            int64_t result = 1;  // |x| >= 2 overflows within 63 steps
            for (int64_t i = 0; i < y; ++i) result = checked(mul_overflow, result, x);
            return result;
        }
    }
    return Value::none();
}

Value float_op(BinaryOp op, double x, double y) {
    switch (op) {
        case BinaryOp::add: return x + y;
        case BinaryOp::sub: return x - y;
        case BinaryOp::mul: return x * y;
        case BinaryOp::div:
            if (y == 0) throw EvalError("float division by zero");
            return x / y;
        case BinaryOp::floordiv:
        case BinaryOp::mod: {
            if (y == 0) throw EvalError(op == BinaryOp::mod ? "float modulo" : "float floor division by zero");
            // CPython's float_divmod
            double mod = std::fmod(x, y);
            double div = (x - mod) / y;
            if (mod != 0) {
                if ((y < 0) != (mod < 0)) {
                    mod += y;
                    div -= 1.0;
                }
            } else {
                mod = std::copysign(0.0, y);
            }
            if (op == BinaryOp::mod) return mod;
            if (div == 0) return std::copysign(0.0, x / y);
            double floordiv = std::floor(div);
            if (div - floordiv > 0.5) floordiv += 1.0;
            return floordiv;
        }
        case BinaryOp::pow:
            if (x == 0 && y < 0) throw EvalError("0.0 cannot be raised to a negative power");
            return std::pow(x, y);
    }
    return Value::none();
}

Value repeat(const Value& seq, int64_t times) {
    if (times <= 0) return seq.is_string() ? Value("") : Value::list({}, seq.as_list().is_tuple);
    if (seq.is_string()) {
        const auto& s = seq.as_string();
        if (static_cast<int64_t>(s.size()) * times > kMaxRepeatBytes) {
            throw EvalError("string repetition result is too large");
        }
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += s;
        return out;
    }
    const auto& list = seq.as_list();
    if (static_cast<int64_t>(list.items.size()) * times > kMaxRepeatBytes / 16) {
        throw EvalError("list repetition result is too large");
    }
    std::vector<Value> items;
    for (int64_t i = 0; i < times; ++i) items.insert(items.end(), list.items.begin(), list.items.end());
    return Value::list(std::move(items), list.is_tuple);
}

// Whether Python could use `v` as a dict key (lists and dicts cannot, nor tuples holding them).
bool hashable(const Value& v) {
    if (v.is_dict()) return false;
    if (!v.is_list()) return true;
    if (!v.as_list().is_tuple) return false;
    for (const auto& item : v.as_list().items) {
        if (!hashable(item)) return false;
    }
    return true;
}

// -1 / 0 / +1 for a < b, or an error where Python has no ordering.
int order(CompareOp op, const Value& a, const Value& b) {
    const NestingGuard guard;
    if (a.is_undefined()) raise_undefined(a);
    if (b.is_undefined()) raise_undefined(b);
    if (a.is_number() && b.is_number()) {
        if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
        const double x = a.as_float();
        const double y = b.as_float();
        return x < y ? -1 : x > y;
    }
    if (a.is_string() && b.is_string()) {
        const int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
        return c < 0 ? -1 : c > 0;
    }
    if (a.is_list() && b.is_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
        const auto& x = a.as_list().items;
        const auto& y = b.as_list().items;
        for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
            if (!equal(x[i], y[i])) return order(op, x[i], y[i]);
        }
        return x.size() < y.size() ? -1 : x.size() > y.size();
    }
    throw EvalError(fmt::format("'{}' not supported between instances of '{}' and '{}'", op_symbol(op),
                                type_name(a), type_name(b)));
}

// Python's PySlice_AdjustIndices: the positions object[start:stop:step] visits.
std::vector<int64_t> slice_positions(int64_t length, const Value& start, const Value& stop, const Value& step) {
    const auto bound = [](const Value& v, const char* what) -> std::optional<int64_t> {
        if (v.is_none() || v.is_undefined()) return std::nullopt;
        if (!v.is_integral()) {
            throw EvalError(fmt::format("slice {} must be an integer or None, not '{}'", what, type_name(v)));
        }
        return v.as_int();
    };
    const int64_t s = bound(step, "step").value_or(1);
    if (s == 0) throw EvalError("slice step cannot be zero");
    const auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
        if (!v) return fallback;
        int64_t i = *v;
        if (i < 0) {
            i += length;
            if (i < 0) i = s < 0 ? -1 : 0;
        } else if (i >= length) {
            i = s < 0 ? length - 1 : length;
        }
        return i;
    };
    const int64_t lo = adjust(bound(start, "indices"), s < 0 ? length - 1 : 0);
    const int64_t hi = adjust(bound(stop, "indices"), s < 0 ? -1 : length);
    std::vector<int64_t> positions;
    for (int64_t i = lo; s > 0 ? i < hi : i > hi; i += s) positions.push_back(i);
    return positions;
}

}  // namespace

Value binary_op(BinaryOp op, const Value& a, const Value& b) {
    if (a.is_undefined()) raise_undefined(a);
    if (b.is_undefined()) raise_undefined(b);
    if (a.is_number() && b.is_number()) {
        if (a.is_integral() && b.is_integral()) return int_op(op, a.as_int(), b.as_int());
        return float_op(op, a.as_float(), b.as_float());
    }
    switch (op) {
        case BinaryOp::add:
            if (a.is_string() && b.is_string()) return a.as_string() + b.as_string();
            if (a.is_list() && b.is_list() && a.as_list().is_tuple == b.as_list().is_tuple) {
                std::vector<Value> items = a.as_list().items;
                items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
                return Value::list(std::move(items), a.as_list().is_tuple);
            }
            if (a.is_string() || a.is_list()) {
                throw EvalError(fmt::format("can only concatenate {} (not \"{}\") to {}", type_name(a), type_name(b),
                                            type_name(a)));
            }
            unsupported(op, a, b);
        case BinaryOp::mul: {
            const bool a_seq = a.is_string() || a.is_list();
            const bool b_seq = b.is_string() || b.is_list();
            if (a_seq && b.is_integral()) return repeat(a, b.as_int());
            if (b_seq && a.is_integral()) return repeat(b, a.as_int());
            if (a_seq || b_seq) {
                throw EvalError(fmt::format("can't multiply sequence by non-int of type '{}'",
                                            type_name(a_seq ? b : a)));
            }
            unsupported(op, a, b);
        }
        case BinaryOp::mod:
            if (a.is_string()) {
                throw EvalError("printf-style formatting (str % value) is not supported in chat templates here");
            }
            unsupported(op, a, b);
        case BinaryOp::sub:
        case BinaryOp::div:
        case BinaryOp::floordiv:
        case BinaryOp::pow: unsupported(op, a, b);
    }
    unsupported(op, a, b);
}

Value negate(const Value& v) {
    if (v.is_undefined()) raise_undefined(v);
    if (v.kind() == Value::Kind::floating) return -v.as_float();
    if (v.is_integral()) {
        if (v.as_int() == INT64_MIN) overflow();
        return -v.as_int();
    }
    throw EvalError(fmt::format("bad operand type for unary -: '{}'", type_name(v)));
}

Value unary_plus(const Value& v) {
    if (v.is_undefined()) raise_undefined(v);
    if (v.kind() == Value::Kind::floating) return v.as_float();
    if (v.is_integral()) return v.as_int();
    throw EvalError(fmt::format("bad operand type for unary +: '{}'", type_name(v)));
}

Value concat(const Value& a, const Value& b) { return to_str(a) + to_str(b); }

bool compare(CompareOp op, const Value& a, const Value& b) {
    switch (op) {
        case CompareOp::eq: return equal(a, b);
        case CompareOp::ne: return !equal(a, b);
        case CompareOp::lt: return order(op, a, b) < 0;
        case CompareOp::le: return order(op, a, b) <= 0;
        case CompareOp::gt: return order(op, a, b) > 0;
        case CompareOp::ge: return order(op, a, b) >= 0;
        case CompareOp::in: return contains(b, a);
        case CompareOp::not_in: return !contains(b, a);
    }
    return false;
}

bool contains(const Value& container, const Value& item) {
    switch (container.kind()) {
        case Value::Kind::string:
            if (!item.is_string()) {
                throw EvalError(
                    fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
            }
            return container.as_string().find(item.as_string()) != std::string::npos;
        case Value::Kind::list:
            for (const auto& x : container.as_list().items) {
                if (equal(x, item)) return true;
            }
            return false;
        case Value::Kind::dict:
            if (!hashable(item)) throw EvalError(fmt::format("unhashable type: '{}'", type_name(item)));
            return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
        case Value::Kind::undefined: return false;  // Undefined iterates as empty
        case Value::Kind::none:
        case Value::Kind::boolean:
        case Value::Kind::integer:
        case Value::Kind::floating:
        case Value::Kind::object:
        case Value::Kind::builtin: break;
    }
    throw EvalError(fmt::format("argument of type '{}' is not iterable", type_name(container)));
}

Value get_attribute(const Value& object, std::string_view name) {
    if (object.is_undefined()) raise_undefined(object);
    if (object.is_dict()) {
        if (const Value* v = object.as_dict().find(name)) return *v;
    } else if (object.kind() == Value::Kind::object) {
        if (const Value* v = object.as_object().find(name)) return *v;
    }
    return Value::undefined(fmt::format("'{}' has no attribute {}", object_type_repr(object), pystr::repr(name)));
}

Value get_item(const Value& object, const Value& key) {
    if (object.is_undefined()) raise_undefined(object);
    if (key.is_string()) {
        if (object.is_list() || object.is_string()) return get_attribute(object, key.as_string());
        if (object.is_dict()) {
            if (const Value* v = object.as_dict().find(key.as_string())) return *v;
        }
        return get_attribute(object, key.as_string());
    }
    if (key.is_integral() && (object.is_list() || object.is_string())) {
        int64_t i = key.as_int();
        if (object.is_list()) {
            const auto& items = object.as_list().items;
            const auto n = static_cast<int64_t>(items.size());
            if (i < 0) i += n;
            if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
        } else {
            const auto chars = pystr::code_points(object.as_string());
            const auto n = static_cast<int64_t>(chars.size());
            if (i < 0) i += n;
            if (i >= 0 && i < n) return Value(chars[static_cast<size_t>(i)]);
        }
    }
    return Value::undefined(fmt::format("{} has no element {}", object_type_repr(object), to_repr(key)));
}

Value slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
    if (object.is_undefined()) raise_undefined(object);
    if (object.is_list()) {
        const auto& list = object.as_list();
        std::vector<Value> items;
        for (const int64_t i : slice_positions(static_cast<int64_t>(list.items.size()), start, stop, step)) {
            items.push_back(list.items[static_cast<size_t>(i)]);
        }
        return Value::list(std::move(items), list.is_tuple);
    }
    if (object.is_string()) {
        const auto chars = pystr::code_points(object.as_string());
        std::string out;
        for (const int64_t i : slice_positions(static_cast<int64_t>(chars.size()), start, stop, step)) {
            out += chars[static_cast<size_t>(i)];
        }
        return out;
    }
    // jinja2 compiles a slice to a plain Python subscript, so this is Python's error, not an Undefined.
    if (object.is_dict()) throw EvalError("unhashable type: 'slice'");
    throw EvalError(fmt::format("'{}' object is not subscriptable", type_name(object)));
}

std::vector<Value> iterate(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::undefined: return {};
        case Value::Kind::list: return v.as_list().items;
        case Value::Kind::dict: {
            std::vector<Value> keys;
            for (const auto& [k, _] : v.as_dict().items) keys.emplace_back(k);
            return keys;
        }
        case Value::Kind::string: {
            std::vector<Value> chars;
            for (const auto c : pystr::code_points(v.as_string())) chars.emplace_back(c);
            return chars;
        }
        case Value::Kind::none:
        case Value::Kind::boolean:
        case Value::Kind::integer:
        case Value::Kind::floating:
        case Value::Kind::object:
        case Value::Kind::builtin: break;
    }
    throw EvalError(fmt::format("'{}' object is not iterable", type_name(v)));
}

int64_t length(const Value& v) {
    switch (v.kind()) {
        case Value::Kind::undefined: return 0;
        case Value::Kind::string: return static_cast<int64_t>(pystr::length(v.as_string()));
        case Value::Kind::list: return static_cast<int64_t>(v.as_list().items.size());
        case Value::Kind::dict: return static_cast<int64_t>(v.as_dict().items.size());
        case Value::Kind::none:
        case Value::Kind::boolean:
        case Value::Kind::integer:
        case Value::Kind::floating:
        case Value::Kind::object:
        case Value::Kind::builtin: break;
    }
    throw EvalError(fmt::format("object of type '{}' has no len()", type_name(v)));
}

}  // namespace tps::chat
