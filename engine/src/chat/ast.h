// The syntax tree of a parsed chat template: expressions and statements as jinja2's parser builds
// them, each node carrying its source line for error messages. Filters and tests are resolved to
// their ids while parsing, so the tree holds nothing the evaluator could fail to find.
#pragma once

#include "builtins.h"
#include "operators.h"
#include "value.h"

#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace tps::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arguments {
    std::vector<ExprPtr> positional;
    std::vector<std::pair<std::string, ExprPtr>> keyword;
};

namespace expr {
struct Literal { Value value; };
struct Name { std::string name; };
struct Sequence { std::vector<ExprPtr> items; bool is_tuple = false; };  // [a, b] or (a, b)
struct Mapping { std::vector<std::pair<ExprPtr, ExprPtr>> items; };     // {k: v}
struct Attribute { ExprPtr object; std::string name; };                 // a.b
struct Subscript { ExprPtr object; ExprPtr key; };                      // a[k]
struct Slice { ExprPtr object, start, stop, step; };                    // a[x:y:z], each bound optional
struct Not { ExprPtr operand; };
struct Negate { ExprPtr operand; bool plus = false; };                  // -a or +a
struct Binary { BinaryOp op; ExprPtr left, right; };
struct Logical { bool is_and = false; ExprPtr left, right; };           // a and b / a or b
struct Concat { std::vector<ExprPtr> parts; };                          // a ~ b ~ c
struct Compare { ExprPtr first; std::vector<std::pair<CompareOp, ExprPtr>> rest; };
struct Conditional { ExprPtr then, condition, otherwise; };             // then if condition else otherwise
struct Call { ExprPtr callee; Arguments args; };
struct Filter { ExprPtr operand; FilterId id; Arguments args; };        // operand | name(args)
struct Test { ExprPtr operand; TestId id; Arguments args; bool negated = false; };  // operand is [not] name
}  // namespace expr

struct Expr {
    int line = 0;
    std::variant<expr::Literal, expr::Name, expr::Sequence, expr::Mapping, expr::Attribute, expr::Subscript,
                 expr::Slice, expr::Not, expr::Negate, expr::Binary, expr::Logical, expr::Concat, expr::Compare,
                 expr::Conditional, expr::Call, expr::Filter, expr::Test>
        node;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// The left side of {% set %}: a name, or namespace.attribute.
struct Target {
    std::string name;
    std::string attribute;  // empty unless ns.attribute
};

// A scope of jinja2's: the template itself, a for loop's body (one per iteration) or else block, a
// block set's body, a {% generation %} body. `undefined_names` (filled by resolve_scopes) start out
// undefined there rather than reaching outward: jinja2 makes a name set unconditionally in a scope,
// before any use in it, local to the whole scope, so an inner loop that reads it before the set sees
// Undefined, not the render context's value.
struct Frame {
    Body body;
    std::vector<std::string> undefined_names;
};

namespace stmt {
struct Text { std::string text; };
struct Output { ExprPtr value; };  // {{ value }}
struct If { std::vector<std::pair<ExprPtr, Body>> branches; Body otherwise; };
struct For {
    std::vector<std::string> targets;  // for a, b in ...
    ExprPtr iterable;
    ExprPtr condition;                 // for x in xs if condition; may be null
    Frame body;
    Frame otherwise;                   // {% else %}: rendered unless an iteration ran to its end
};
struct Set {
    std::vector<Target> targets;  // several only as names: {% set a, b = ... %}
    ExprPtr value;                // null for a block set, whose value is `body` rendered
    Frame body;
};
struct Break {};
struct Continue {};
struct Scope { Frame body; };  // transformers' {% generation %}: its body in a scope of its own
}  // namespace stmt

struct Stmt {
    int line = 0;
    std::variant<stmt::Text, stmt::Output, stmt::If, stmt::For, stmt::Set, stmt::Break, stmt::Continue, stmt::Scope>
        node;
};

// Fills every Frame's undefined_names, following jinja2/idtracking.py.
void resolve_scopes(Frame& root);

}  // namespace tps::chat
