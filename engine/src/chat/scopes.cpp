// jinja2's symbol analysis (idtracking.py), reduced to the one thing it changes in output: which
// names a scope binds to Undefined on entry. jinja2 walks each scope's own statements in order (the
// bodies of nested loops and blocks are scopes of their own, analysed afterwards); a name whose first
// mention there is an unconditional {% set %} becomes local to the whole scope and starts undefined,
// unless an enclosing scope mentions it anywhere (then it starts as that scope's value, which plain
// lookup already gives). A first mention inside an if branch, or a use, starts from the outer value.
#include "ast.h"

#include <set>

namespace tps::chat {
namespace {

class ScopeAnalysis {
public:
    // `enclosing`: the names every enclosing scope mentions.
    void analyze(Frame& frame, const std::vector<const std::set<std::string>*>& enclosing) {
        std::set<std::string> seen;
        std::vector<std::string> stored_first;
        std::vector<Frame*> children;
        walk(frame.body, false, seen, stored_first, children);
        frame.undefined_names.clear();
        for (const auto& name : stored_first) {
            bool outer = false;
            for (const auto* names : enclosing) outer = outer || names->count(name) > 0;
            if (!outer) frame.undefined_names.push_back(name);
        }
        auto inner = enclosing;
        inner.push_back(&seen);
        for (Frame* child : children) analyze(*child, inner);
    }

private:
    static void mention(const std::string& name, std::set<std::string>& seen) { seen.insert(name); }

    // Every name an expression reads, in any order (only the set of them matters).
    static void reads(const Expr& e, std::set<std::string>& seen) {
        const auto sub = [&](const ExprPtr& p) {
            if (p) reads(*p, seen);
        };
        const auto args = [&](const Arguments& a) {
            for (const auto& p : a.positional) sub(p);
            for (const auto& [_, p] : a.keyword) sub(p);
        };
        std::visit(
            [&](const auto& n) {
                using N = std::decay_t<decltype(n)>;
                if constexpr (std::is_same_v<N, expr::Name>) {
                    mention(n.name, seen);
                } else if constexpr (std::is_same_v<N, expr::Sequence>) {
                    for (const auto& p : n.items) sub(p);
                } else if constexpr (std::is_same_v<N, expr::Mapping>) {
                    for (const auto& [k, v] : n.items) sub(k), sub(v);
                } else if constexpr (std::is_same_v<N, expr::Attribute>) {
                    sub(n.object);
                } else if constexpr (std::is_same_v<N, expr::Subscript>) {
                    sub(n.object), sub(n.key);
                } else if constexpr (std::is_same_v<N, expr::Slice>) {
                    sub(n.object), sub(n.start), sub(n.stop), sub(n.step);
                } else if constexpr (std::is_same_v<N, expr::Not> || std::is_same_v<N, expr::Negate>) {
                    sub(n.operand);
                } else if constexpr (std::is_same_v<N, expr::Binary> || std::is_same_v<N, expr::Logical>) {
                    sub(n.left), sub(n.right);
                } else if constexpr (std::is_same_v<N, expr::Concat>) {
                    for (const auto& p : n.parts) sub(p);
                } else if constexpr (std::is_same_v<N, expr::Compare>) {
                    sub(n.first);
                    for (const auto& [_, p] : n.rest) sub(p);
                } else if constexpr (std::is_same_v<N, expr::Conditional>) {
                    sub(n.condition), sub(n.then), sub(n.otherwise);
                } else if constexpr (std::is_same_v<N, expr::Call>) {
                    sub(n.callee), args(n.args);
                } else if constexpr (std::is_same_v<N, expr::Filter> || std::is_same_v<N, expr::Test>) {
                    sub(n.operand), args(n.args);
                }
            },
            e.node);
    }

    // The statements of one scope: what they mention, what they store first and unconditionally,
    // and the scopes nested in them.
    void walk(Body& body, bool conditional, std::set<std::string>& seen, std::vector<std::string>& stored_first,
              std::vector<Frame*>& children) {
        for (auto& s : body) {
            std::visit(
                [&](auto& n) {
                    using N = std::decay_t<decltype(n)>;
                    if constexpr (std::is_same_v<N, stmt::Output>) {
                        reads(*n.value, seen);
                    } else if constexpr (std::is_same_v<N, stmt::If>) {
                        for (auto& [condition, branch] : n.branches) {
                            reads(*condition, seen);
                            walk(branch, true, seen, stored_first, children);
                        }
                        walk(n.otherwise, true, seen, stored_first, children);
                    } else if constexpr (std::is_same_v<N, stmt::For>) {
                        reads(*n.iterable, seen);  // its filter condition is a scope of its own, without sets
                        children.push_back(&n.body);
                        children.push_back(&n.otherwise);
                    } else if constexpr (std::is_same_v<N, stmt::Set>) {
                        if (n.value) reads(*n.value, seen);
                        for (const auto& target : n.targets) {
                            const bool first = seen.count(target.name) == 0;
                            mention(target.name, seen);
                            if (first && target.attribute.empty() && !conditional) {
                                stored_first.push_back(target.name);
                            }
                        }
                        if (!n.value) children.push_back(&n.body);
                    } else if constexpr (std::is_same_v<N, stmt::Scope>) {
                        children.push_back(&n.body);
                    }
                },
                s->node);
        }
    }
};

}  // namespace

void resolve_scopes(Frame& root) { ScopeAnalysis().analyze(root, {}); }

}  // namespace tps::chat
