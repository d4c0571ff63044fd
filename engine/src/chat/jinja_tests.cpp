// jinja2's tests (`x is defined`, `x is string`, ...) as jinja2/tests.py defines them, Python's
// quirks included: True is a number, a str is iterable, and an Undefined is iterable and a sequence.
#include "builtins.h"

#include "operators.h"
#include "pystr.h"

#include <fmt/format.h>

#include <algorithm>

namespace tps::chat {
namespace {

struct TestName {
    std::string_view name;
    TestId id;
};

constexpr TestName kTests[] = {
    {"defined", TestId::defined},   {"undefined", TestId::undefined}, {"none", TestId::none},
    {"boolean", TestId::boolean},   {"true", TestId::true_value},     {"false", TestId::false_value},
    {"number", TestId::number},     {"integer", TestId::integer},     {"float", TestId::float_value},
    {"string", TestId::string},     {"mapping", TestId::mapping},     {"iterable", TestId::iterable},
    {"sequence", TestId::sequence}, {"callable", TestId::callable},   {"odd", TestId::odd},
    {"even", TestId::even},         {"divisibleby", TestId::divisibleby}, {"eq", TestId::eq},
    {"equalto", TestId::eq},        {"==", TestId::eq},               {"ne", TestId::ne},
    {"!=", TestId::ne},             {"lt", TestId::lt},               {"lessthan", TestId::lt},
    {"<", TestId::lt},              {"le", TestId::le},               {"<=", TestId::le},
    {"gt", TestId::gt},             {"greaterthan", TestId::gt},      {">", TestId::gt},
    {"ge", TestId::ge},             {">=", TestId::ge},               {"in", TestId::in},
    {"lower", TestId::lower},       {"upper", TestId::upper},         {"sameas", TestId::sameas},
};

constexpr std::string_view kOtherJinjaTests[] = {"escaped", "filter", "test"};

const Value& operand(const CallArgs& args, std::string_view test) {
    args.check(test, 1, {});
    if (args.positional.empty()) throw EvalError(fmt::format("the test '{}' needs an argument", test));
    return args.positional[0];
}

void no_operand(const CallArgs& args, std::string_view test) { args.check(test, 0, {}); }

// value % divisor == remainder, with Python's % (so floats count: -2.0 is even).
bool remainder_is(const Value& v, const Value& divisor, int64_t remainder) {
    return equal(binary_op(BinaryOp::mod, v, divisor), Value(remainder));
}

}  // namespace

std::optional<TestId> find_test(std::string_view name) {
    for (const auto& t : kTests) {
        if (t.name == name) return t.id;
    }
    return std::nullopt;
}

std::string unsupported_test_message(std::string_view name) {
    const bool jinja_has_it =
        std::find(std::begin(kOtherJinjaTests), std::end(kOtherJinjaTests), name) != std::end(kOtherJinjaTests);
    return jinja_has_it ? fmt::format("the test '{}' is not supported by tpserve's chat templates", name)
                        : fmt::format("No test named '{}'.", name);
}

bool apply_test(TestId id, const Value& v, const CallArgs& args) {
    using K = Value::Kind;
    switch (id) {
        case TestId::defined: no_operand(args, "defined"); return !v.is_undefined();
        case TestId::undefined: no_operand(args, "undefined"); return v.is_undefined();
        case TestId::none: no_operand(args, "none"); return v.is_none();
        case TestId::boolean: no_operand(args, "boolean"); return v.kind() == K::boolean;
        case TestId::true_value: no_operand(args, "true"); return v.kind() == K::boolean && v.as_bool();
        case TestId::false_value: no_operand(args, "false"); return v.kind() == K::boolean && !v.as_bool();
        case TestId::number: no_operand(args, "number"); return v.is_number();
        case TestId::integer: no_operand(args, "integer"); return v.kind() == K::integer;
        case TestId::float_value: no_operand(args, "float"); return v.kind() == K::floating;
        case TestId::string: no_operand(args, "string"); return v.is_string();
        case TestId::mapping: no_operand(args, "mapping"); return v.is_dict();
        case TestId::iterable:
            no_operand(args, "iterable");
            return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
        case TestId::sequence:
            no_operand(args, "sequence");
            return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
        case TestId::callable:
            no_operand(args, "callable");
            return v.is_undefined() || v.kind() == K::builtin ||
                   (v.kind() == K::object && v.as_object().kind == ObjectKind::loop);
        case TestId::odd: no_operand(args, "odd"); return remainder_is(v, Value(2), 1);
        case TestId::even: no_operand(args, "even"); return remainder_is(v, Value(2), 0);
        case TestId::divisibleby: return remainder_is(v, operand(args, "divisibleby"), 0);
        case TestId::eq: return compare(CompareOp::eq, v, operand(args, "eq"));
        case TestId::ne: return compare(CompareOp::ne, v, operand(args, "ne"));
        case TestId::lt: return compare(CompareOp::lt, v, operand(args, "lt"));
        case TestId::le: return compare(CompareOp::le, v, operand(args, "le"));
        case TestId::gt: return compare(CompareOp::gt, v, operand(args, "gt"));
        case TestId::ge: return compare(CompareOp::ge, v, operand(args, "ge"));
        case TestId::in: return contains(operand(args, "in"), v);
        case TestId::lower: no_operand(args, "lower"); return pystr::is_lower(to_str(v));
        case TestId::upper: no_operand(args, "upper"); return pystr::is_upper(to_str(v));
        case TestId::sameas: return v.same(operand(args, "sameas"));
    }
    throw EvalError("unknown test");
}

}  // namespace tps::chat
