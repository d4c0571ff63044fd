// Python's operators and object protocol over template values, as jinja2's sandbox applies them:
// arithmetic, comparison, `in`, attribute and item lookup (a missing one is Undefined, not an error),
// slicing, iteration and len(). Failures throw EvalError with CPython's message.
#pragma once

#include "value.h"

#include <optional>
#include <string_view>
#include <vector>

namespace tps::chat {

enum class BinaryOp { add, sub, mul, div, floordiv, mod, pow };
enum class CompareOp { eq, ne, lt, le, gt, ge, in, not_in };

Value binary_op(BinaryOp op, const Value& a, const Value& b);
Value negate(const Value& v);
Value unary_plus(const Value& v);
Value concat(const Value& a, const Value& b);  // a ~ b
bool compare(CompareOp op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);  // item in container

// environment.getattr / getitem of jinja2's sandbox: obj.name tries the attribute, obj[key] the item;
// either falls back to the other, and a miss is an Undefined that says what was missing.
Value get_attribute(const Value& object, std::string_view name);
Value get_item(const Value& object, const Value& key);
// object[start:stop:step]; each bound may be None.
Value slice(const Value& object, const Value& start, const Value& stop, const Value& step);

std::vector<Value> iterate(const Value& v);  // for x in v (a dict yields keys, a str characters)
int64_t length(const Value& v);              // len(v)

}  // namespace tps::chat
