// Recursive descent over the token stream, one function per grammar rule of jinja2/parser.py, so
// that `'a' + b | trim` binds as jinja2 binds it (filters before +), `not x is none` is not (x is
// none), and `for x in xs if cond` filters rather than reading a conditional expression.
#include "parser.h"

#include "token_stream.h"

#include <fmt/format.h>

#include <initializer_list>

namespace tps::chat {
namespace {

constexpr int kMaxDepth = 200;  // nesting of expressions and blocks; deeper is surely not a chat template

// jinja2 tags this interpreter leaves out, named as such rather than as unknown tags.
constexpr std::string_view kUnsupportedTags[] = {"macro", "call", "filter", "block", "extends", "include",
                                                  "import", "from", "with", "autoescape", "endmacro"};

bool is_constant_name(std::string_view name) {
    return name == "true" || name == "false" || name == "True" || name == "False" || name == "none" ||
           name == "None";
}

struct OpenBlock {
    std::string_view tag;  // "for"
    int line;
};

class Parser : TokenStream {
public:
    Parser(std::vector<Token> tokens, const std::string& origin) : TokenStream(std::move(tokens), origin) {}

    Frame parse_template() { return Frame{subparse({}, nullptr), {}}; }

private:
    struct DepthGuard {
        explicit DepthGuard(Parser& p) : parser(p) {
            if (++parser.depth_ > kMaxDepth) parser.fail(parser.cur().line, "the template is nested too deeply");
        }
        ~DepthGuard() { --parser.depth_; }
        DepthGuard(const DepthGuard&) = delete;
        DepthGuard& operator=(const DepthGuard&) = delete;
        Parser& parser;
    };

    template <class Node>
    static ExprPtr make(int line, Node node) {
        return ExprPtr(new Expr{line, std::move(node)});
    }
    template <class Node>
    static StmtPtr make_stmt(int line, Node node) {
        return StmtPtr(new Stmt{line, std::move(node)});
    }

    // ---- statements

    // Statements up to a {% name %} in `end_names` (left as the current token) or the end.
    Body subparse(std::initializer_list<std::string_view> end_names, const OpenBlock* open) {
        DepthGuard guard(*this);
        Body body;
        while (cur().kind != TokenKind::end) {
            const Token& t = cur();
            if (t.kind == TokenKind::text) {
                body.push_back(make_stmt(t.line, stmt::Text{next().text}));
            } else if (t.kind == TokenKind::variable_begin) {
                const int line = next().line;
                ExprPtr value = parse_tuple(true, false, {});
                expect(TokenKind::variable_end, "'}}' to close '{{'");
                body.push_back(make_stmt(line, stmt::Output{std::move(value)}));
            } else if (t.kind == TokenKind::block_begin) {
                next();
                if (cur().kind == TokenKind::name) {
                    for (const auto end_name : end_names) {
                        if (cur().text == end_name) return body;
                    }
                }
                body.push_back(parse_statement(open));
                expect(TokenKind::block_end, "'%}' to close the tag");
            } else {
                fail(t.line, "unexpected {}", describe(t));
            }
        }
        if (open) {
            std::string wanted;
            for (const auto n : end_names) {
                if (!wanted.empty()) wanted += " or ";
                wanted += fmt::format("'{{% {} %}}'", n);
            }
            fail(open->line, "'{{% {} %}}' is never closed: the template ends before {}", open->tag, wanted);
        }
        return body;
    }

    // After a block's opening tag: its `%}`, then its body up to one of `end_names`.
    Body parse_statements(std::initializer_list<std::string_view> end_names, OpenBlock open) {
        expect(TokenKind::block_end, "'%}' to close the tag");
        return subparse(end_names, &open);
    }

    StmtPtr parse_statement(const OpenBlock* open) {
        const Token& t = cur();
        if (t.kind != TokenKind::name) fail(t.line, "expected a tag name after '{{%', got {}", describe(t));
        const std::string& tag = t.text;
        const int line = t.line;
        if (tag == "if") return parse_if();
        if (tag == "for") return parse_for();
        if (tag == "set") return parse_set();
        if (tag == "break" || tag == "continue") {
            if (loop_depth_ == 0) fail(line, "'{{% {} %}}' outside a for loop", tag);
            const bool is_break = tag == "break";
            next();
            return is_break ? make_stmt(line, stmt::Break{}) : make_stmt(line, stmt::Continue{});
        }
        if (tag == "print") {
            next();
            return make_stmt(line, stmt::Output{parse_tuple(true, false, {})});
        }
        if (tag == "generation") {  // transformers' AssistantTracker extension
            next();
            Body body = parse_statements({"endgeneration"}, {"generation", line});
            next();
            return make_stmt(line, stmt::Scope{Frame{std::move(body), {}}});
        }
        for (const auto unsupported : kUnsupportedTags) {
            if (tag == unsupported) fail(line, "'{{% {} %}}' is not supported by tpserve's chat templates", tag);
        }
        if (open) {
            fail(line, "unexpected '{{% {} %}}' inside '{{% {} %}}' opened at line {}", tag, open->tag, open->line);
        }
        fail(line, "unknown tag '{{% {} %}}'", tag);
    }

    StmtPtr parse_if() {
        const int line = next().line;
        stmt::If node;
        while (true) {
            ExprPtr condition = parse_tuple(false, false, {});
            Body body = parse_statements({"elif", "else", "endif"}, {"if", line});
            node.branches.emplace_back(std::move(condition), std::move(body));
            const std::string which = next().text;
            if (which == "elif") continue;
            if (which == "else") {
                node.otherwise = parse_statements({"endif"}, {"if", line});
                next();
            }
            break;
        }
        return make_stmt(line, std::move(node));
    }

    StmtPtr parse_for() {
        const int line = next().line;
        stmt::For node;
        node.targets = parse_assign_names("for");
        if (!skip_name("in")) fail(cur().line, "expected 'in' in the for loop, got {}", describe(cur()));
        node.iterable = parse_tuple(false, false, {"recursive"});
        if (skip_name("if")) node.condition = parse_expression(true);
        if (is_name("recursive")) {
            fail(cur().line, "recursive for loops are not supported by tpserve's chat templates");
        }
        ++loop_depth_;
        node.body.body = parse_statements({"endfor", "else"}, {"for", line});
        --loop_depth_;
        if (next().text == "else") {
            node.otherwise.body = parse_statements({"endfor"}, {"for", line});
            next();
        }
        return make_stmt(line, std::move(node));
    }

    StmtPtr parse_set() {
        const int line = next().line;
        stmt::Set node;
        if (cur().kind == TokenKind::name && look_is_op(".")) {
            Target target{next().text, ""};
            next();
            target.attribute = expect_name("an attribute name after '.'");
            node.targets.push_back(std::move(target));
        } else {
            for (auto& name : parse_assign_names("set")) node.targets.push_back(Target{std::move(name), ""});
        }
        if (skip_op("=")) {
            node.value = parse_tuple(true, false, {});
            return make_stmt(line, std::move(node));
        }
        if (is_op("|")) fail(cur().line, "filtered block sets are not supported by tpserve's chat templates");
        if (node.targets.size() != 1) fail(line, "a block set assigns to one name");
        node.body.body = parse_statements({"endset"}, {"set", line});
        next();
        return make_stmt(line, std::move(node));
    }

    // `a` or `a, b` or `(a, b)`: the names a for loop or a set assigns.
    std::vector<std::string> parse_assign_names(std::string_view tag) {
        const bool parens = skip_op("(");
        std::vector<std::string> names;
        do {
            if (parens && is_op(")")) break;
            const Token& t = cur();
            if (t.kind != TokenKind::name || is_constant_name(t.text)) {
                fail(t.line, "'{{% {} %}}' can only assign to names, not {}", tag, describe(t));
            }
            names.push_back(next().text);
        } while (skip_op(",") && (parens || cur().kind == TokenKind::name));
        if (parens) expect_op(")");
        return names;
    }

    // ---- expressions

    ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens, std::initializer_list<std::string_view> extra_end) {
        const int line = cur().line;
        std::vector<ExprPtr> items;
        bool is_tuple = false;
        while (true) {
            if (!items.empty()) expect_op(",");
            if (is_tuple_end(extra_end)) break;
            items.push_back(parse_expression(with_condexpr));
            if (!is_op(",")) break;
            is_tuple = true;
        }
        if (!is_tuple) {
            if (!items.empty()) return std::move(items.front());
            if (!explicit_parens) fail(cur().line, "expected an expression, got {}", describe(cur()));
        }
        return make(line, expr::Sequence{std::move(items), true});
    }

    bool is_tuple_end(std::initializer_list<std::string_view> extra_end) const {
        if (cur().kind == TokenKind::variable_end || cur().kind == TokenKind::block_end || is_op(")")) return true;
        for (const auto name : extra_end) {
            if (is_name(name)) return true;
        }
        return false;
    }

    ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

    ExprPtr parse_condexpr() {
        const int line = cur().line;
        ExprPtr node = parse_or();
        while (skip_name("if")) {
            ExprPtr condition = parse_or();
            ExprPtr otherwise = skip_name("else") ? parse_condexpr() : nullptr;
            node = make(line, expr::Conditional{std::move(node), std::move(condition), std::move(otherwise)});
        }
        return node;
    }

    ExprPtr parse_or() {
        ExprPtr node = parse_and();
        while (is_name("or")) {
            const int line = next().line;
            node = make(line, expr::Logical{false, std::move(node), parse_and()});
        }
        return node;
    }

    ExprPtr parse_and() {
        ExprPtr node = parse_not();
        while (is_name("and")) {
            const int line = next().line;
            node = make(line, expr::Logical{true, std::move(node), parse_not()});
        }
        return node;
    }

    ExprPtr parse_not() {
        if (is_name("not")) {
            DepthGuard guard(*this);
            const int line = next().line;
            return make(line, expr::Not{parse_not()});
        }
        return parse_compare();
    }

    ExprPtr parse_compare() {
        const int line = cur().line;
        ExprPtr first = parse_math1();
        std::vector<std::pair<CompareOp, ExprPtr>> rest;
        while (true) {
            static constexpr std::pair<std::string_view, CompareOp> kOps[] = {
                {"==", CompareOp::eq}, {"!=", CompareOp::ne}, {"<", CompareOp::lt},
                {"<=", CompareOp::le}, {">", CompareOp::gt},  {">=", CompareOp::ge}};
            std::optional<CompareOp> op;
            for (const auto& [text, o] : kOps) {
                if (is_op(text)) op = o;
            }
            if (op) {
                next();
            } else if (skip_name("in")) {
                op = CompareOp::in;
            } else if (is_name("not") && look().kind == TokenKind::name && look().text == "in") {
                next();
                next();
                op = CompareOp::not_in;
            } else {
                break;
            }
            rest.emplace_back(*op, parse_math1());
        }
        if (rest.empty()) return first;
        return make(line, expr::Compare{std::move(first), std::move(rest)});
    }

    ExprPtr parse_math1() {
        ExprPtr node = parse_concat();
        while (is_op("+") || is_op("-")) {
            const Token& t = next();
            node = make(t.line, expr::Binary{t.text == "+" ? BinaryOp::add : BinaryOp::sub, std::move(node),
                                             parse_concat()});
        }
        return node;
    }

    ExprPtr parse_concat() {
        const int line = cur().line;
        ExprPtr first = parse_math2();
        if (!is_op("~")) return first;
        std::vector<ExprPtr> parts;
        parts.push_back(std::move(first));
        while (skip_op("~")) parts.push_back(parse_math2());
        return make(line, expr::Concat{std::move(parts)});
    }

    ExprPtr parse_math2() {
        ExprPtr node = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const Token& t = next();
            const BinaryOp op = t.text == "*"   ? BinaryOp::mul
                                : t.text == "/" ? BinaryOp::div
                                : t.text == "//" ? BinaryOp::floordiv
                                                 : BinaryOp::mod;
            node = make(t.line, expr::Binary{op, std::move(node), parse_pow()});
        }
        return node;
    }

    ExprPtr parse_pow() {
        ExprPtr node = parse_unary(true);
        while (is_op("**")) {
            const int line = next().line;
            node = make(line, expr::Binary{BinaryOp::pow, std::move(node), parse_unary(true)});
        }
        return node;
    }

    ExprPtr parse_unary(bool with_filter) {
        DepthGuard guard(*this);
        const int line = cur().line;
        ExprPtr node;
        if (is_op("-") || is_op("+")) {
            const bool plus = next().text == "+";
            node = make(line, expr::Negate{parse_unary(false), plus});
        } else {
            node = parse_primary();
        }
        node = parse_postfix(std::move(node));
        if (with_filter) node = parse_filter_expr(std::move(node));
        return node;
    }

    ExprPtr parse_primary() {
        const Token& t = cur();
        const int line = t.line;
        switch (t.kind) {
            case TokenKind::name: {
                const std::string& n = next().text;
                if (n == "true" || n == "True") return make(line, expr::Literal{Value(true)});
                if (n == "false" || n == "False") return make(line, expr::Literal{Value(false)});
                if (n == "none" || n == "None") return make(line, expr::Literal{Value::none()});
                return make(line, expr::Name{n});
            }
            case TokenKind::string: {
                std::string s = next().text;
                while (cur().kind == TokenKind::string) s += next().text;  // 'a' 'b' is 'ab'
                return make(line, expr::Literal{Value(std::move(s))});
            }
            case TokenKind::integer: return make(line, expr::Literal{Value(next().integer)});
            case TokenKind::floating: return make(line, expr::Literal{Value(next().floating)});
            case TokenKind::op:
                if (t.text == "(") {
                    next();
                    ExprPtr inner = parse_tuple(true, true, {});
                    expect_op(")");
                    return inner;
                }
                if (t.text == "[") return parse_list();
                if (t.text == "{") return parse_dict();
                break;
            case TokenKind::text:
            case TokenKind::variable_begin:
            case TokenKind::variable_end:
            case TokenKind::block_begin:
            case TokenKind::block_end:
            case TokenKind::end: break;
        }
        fail(line, "unexpected {} in an expression", describe(t));
    }

    ExprPtr parse_list() {
        const int line = next().line;
        std::vector<ExprPtr> items;
        while (!is_op("]")) {
            if (!items.empty()) expect_op(",");
            if (is_op("]")) break;
            items.push_back(parse_expression(true));
        }
        expect_op("]");
        return make(line, expr::Sequence{std::move(items), false});
    }

    ExprPtr parse_dict() {
        const int line = next().line;
        std::vector<std::pair<ExprPtr, ExprPtr>> items;
        while (!is_op("}")) {
            if (!items.empty()) expect_op(",");
            if (is_op("}")) break;
            ExprPtr key = parse_expression(true);
            expect_op(":");
            items.emplace_back(std::move(key), parse_expression(true));
        }
        expect_op("}");
        return make(line, expr::Mapping{std::move(items)});
    }

    ExprPtr parse_postfix(ExprPtr node) {
        while (true) {
            if (is_op(".") || is_op("[")) {
                node = parse_subscript(std::move(node));
            } else if (is_op("(")) {
                const int line = cur().line;
                node = make(line, expr::Call{std::move(node), parse_call_args()});
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_filter_expr(ExprPtr node) {
        while (true) {
            if (is_op("|")) {
                node = parse_filter(std::move(node));
            } else if (is_name("is")) {
                node = parse_test(std::move(node));
            } else if (is_op("(")) {
                const int line = cur().line;
                node = make(line, expr::Call{std::move(node), parse_call_args()});
            } else {
                return node;
            }
        }
    }

    ExprPtr parse_subscript(ExprPtr node) {
        const Token& t = next();
        const int line = t.line;
        if (t.text == ".") {
            const Token& attr = next();
            if (attr.kind == TokenKind::name) return make(line, expr::Attribute{std::move(node), attr.text});
            if (attr.kind == TokenKind::integer) {
                return make(line, expr::Subscript{std::move(node), make(line, expr::Literal{Value(attr.integer)})});
            }
            fail(attr.line, "expected an attribute name after '.', got {}", describe(attr));
        }
        // [key], [a, b] or [] (a tuple key) or [start:stop:step]
        if (skip_op("]")) {
            return make(line, expr::Subscript{std::move(node), make(line, expr::Sequence{{}, true})});
        }
        ExprPtr start;
        if (!is_op(":")) {
            start = parse_expression(true);
            if (is_op(",")) {
                std::vector<ExprPtr> keys;
                keys.push_back(std::move(start));
                while (skip_op(",") && !is_op("]")) keys.push_back(parse_expression(true));
                expect_op("]");
                ExprPtr key = make(line, expr::Sequence{std::move(keys), true});
                return make(line, expr::Subscript{std::move(node), std::move(key)});
            }
            if (!is_op(":")) {
                expect_op("]");
                return make(line, expr::Subscript{std::move(node), std::move(start)});
            }
        }
        expect_op(":");
        ExprPtr stop;
        ExprPtr step;
        if (!is_op("]") && !is_op(":")) stop = parse_expression(true);
        if (skip_op(":") && !is_op("]")) step = parse_expression(true);
        expect_op("]");
        return make(line, expr::Slice{std::move(node), std::move(start), std::move(stop), std::move(step)});
    }

    Arguments parse_call_args() {
        expect_op("(");
        Arguments args;
        bool require_comma = false;
        while (!is_op(")")) {
            if (require_comma) {
                expect_op(",");
                if (is_op(")")) break;
            }
            if (is_op("*") || is_op("**")) {
                fail(cur().line, "'{}' argument unpacking is not supported by tpserve's chat templates", cur().text);
            }
            if (cur().kind == TokenKind::name && look_is_op("=")) {
                std::string key = next().text;
                next();
                args.keyword.emplace_back(std::move(key), parse_expression(true));
            } else {
                if (!args.keyword.empty()) fail(cur().line, "a positional argument follows a keyword argument");
                args.positional.push_back(parse_expression(true));
            }
            require_comma = true;
        }
        expect_op(")");
        return args;
    }

    std::string parse_dotted_name(std::string_view what) {
        std::string name = expect_name(what);
        while (skip_op(".")) {
            name += '.';
            name += expect_name(what);
        }
        return name;
    }

    ExprPtr parse_filter(ExprPtr node) {
        while (skip_op("|")) {
            const int line = cur().line;
            const std::string name = parse_dotted_name("a filter name after '|'");
            const auto id = find_filter(name);
            if (!id) fail(line, "{}", unsupported_filter_message(name));
            Arguments args = is_op("(") ? parse_call_args() : Arguments{};
            node = make(line, expr::Filter{std::move(node), *id, std::move(args)});
        }
        return node;
    }

    ExprPtr parse_test(ExprPtr node) {
        const int line = next().line;  // 'is'
        const bool negated = skip_name("not");
        const std::string name = parse_dotted_name("a test name after 'is'");
        const auto id = find_test(name);
        if (!id) fail(line, "{}", unsupported_test_message(name));
        Arguments args;
        if (is_op("(")) {
            args = parse_call_args();
        } else if ((cur().kind == TokenKind::name || cur().kind == TokenKind::string ||
                    cur().kind == TokenKind::integer || cur().kind == TokenKind::floating || is_op("[") ||
                    is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
            if (is_name("is")) fail(cur().line, "You cannot chain multiple tests with is");
            args.positional.push_back(parse_postfix(parse_primary()));  // x is divisibleby 3
        }
        return make(line, expr::Test{std::move(node), *id, std::move(args), negated});
    }

    int depth_ = 0;
    int loop_depth_ = 0;
};

}  // namespace

Frame parse(std::vector<Token> tokens, const std::string& origin) {
    Frame root = Parser(std::move(tokens), origin).parse_template();
    resolve_scopes(root);
    return root;
}

}  // namespace tps::chat
