// The tree-walking evaluator. Scopes are a stack of frames: the template's own frame, then one per
// for-loop iteration (and per {% set %} block body or {% generation %} block), as jinja2 compiles
// them; a name not found in any frame comes from the render context, then from the globals.
#include "evaluator.h"

#include "operators.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

namespace tps::chat {
namespace {

constexpr size_t kMaxOutputBytes = size_t{1} << 28;  // a runaway template stops here, not at the OOM killer

struct GlobalName {
    std::string_view name;
    Builtin builtin;
};

constexpr GlobalName kGlobals[] = {
    {"range", Builtin::range},
    {"namespace", Builtin::make_namespace},
    {"dict", Builtin::make_dict},
    {"raise_exception", Builtin::raise_exception},
    {"strftime_now", Builtin::strftime_now},
};

class Renderer {
public:
    Renderer(const DictData& context, const std::string& origin, const Clock& clock)
        : context_(context), origin_(origin), clock_(clock) {}

    // Namespaces are the only values that can hold themselves ({% set ns.me = ns %}) or chain
    // without bound; emptying them oldest first frees everything without cycles or deep recursion.
    ~Renderer() {
        for (const auto& ns : namespaces_) ns.as_object().attributes.clear();
    }
    Renderer(const Renderer&) = delete;
    Renderer& operator=(const Renderer&) = delete;

    std::string run(const Frame& program) {
        exec_frame(program);
        return std::move(out_);
    }

private:
    enum class Flow { normal, break_loop, continue_loop };

    // ---- scopes

    struct FrameGuard {
        explicit FrameGuard(Renderer& r) : renderer(r) { renderer.frames_.emplace_back(); }
        ~FrameGuard() { renderer.frames_.pop_back(); }
        FrameGuard(const FrameGuard&) = delete;
        FrameGuard& operator=(const FrameGuard&) = delete;
        Renderer& renderer;
    };

    Value lookup(const std::string& name) const {
        for (auto frame = frames_.rbegin(); frame != frames_.rend(); ++frame) {
            for (const auto& [k, v] : *frame) {
                if (k == name) return v;
            }
        }
        if (const Value* v = context_.find(name)) return *v;
        for (const auto& g : kGlobals) {
            if (g.name == name) return Value::builtin(g.builtin);
        }
        return Value::undefined(fmt::format("'{}' is undefined", name));
    }

    void assign(const std::string& name, Value value) {
        for (auto& [k, v] : frames_.back()) {
            if (k == name) {
                v = std::move(value);
                return;
            }
        }
        frames_.back().emplace_back(name, std::move(value));
    }

    // for a, b in ... / set a, b = ...: Python's unpacking.
    void assign_all(const std::vector<std::string>& names, const Value& value) {
        if (names.size() == 1) return assign(names.front(), value);
        if (value.is_undefined()) raise_undefined(value);
        if (!(value.is_list() || value.is_dict() || value.is_string())) {
            throw EvalError(fmt::format("cannot unpack non-iterable {} object", type_name(value)));
        }
        const auto items = iterate(value);
        if (items.size() > names.size()) {
            throw EvalError(fmt::format("too many values to unpack (expected {})", names.size()));
        }
        if (items.size() < names.size()) {
            throw EvalError(
                fmt::format("not enough values to unpack (expected {}, got {})", names.size(), items.size()));
        }
        for (size_t i = 0; i < names.size(); ++i) assign(names[i], items[i]);
    }

    // ---- statements

    // A scope's body in a frame of its own, its undefined_names bound first.
    Flow exec_frame(const Frame& frame) {
        FrameGuard guard(*this);
        bind_undefined(frame);
        return exec_body(frame.body);
    }

    void bind_undefined(const Frame& frame) {
        for (const auto& name : frame.undefined_names) {
            assign(name, Value::undefined(fmt::format("'{}' is undefined", name)));
        }
    }

    Flow exec_body(const Body& body) {
        for (const auto& s : body) {
            const Flow flow = exec(*s);
            if (flow != Flow::normal) return flow;
        }
        return Flow::normal;
    }

    Flow exec(const Stmt& s) {
        try {
            return std::visit([&](const auto& node) { return exec_node(node); }, s.node);
        } catch (const EvalError& e) {
            throw InputError(fmt::format("{}:{}: {}", origin_, s.line, e.what()));
        }
    }

    void write(std::string_view text) {
        out_ += text;
        if (out_.size() > kMaxOutputBytes) throw EvalError("the rendered prompt exceeds 256 MiB");
    }

    Flow exec_node(const stmt::Text& n) {
        write(n.text);
        return Flow::normal;
    }

    Flow exec_node(const stmt::Output& n) {
        write(to_str(eval(*n.value)));
        return Flow::normal;
    }

    Flow exec_node(const stmt::If& n) {
        for (const auto& [condition, body] : n.branches) {
            if (truthy(eval(*condition))) return exec_body(body);
        }
        return exec_body(n.otherwise);
    }

    Flow exec_node(const stmt::For& n) {
        std::vector<Value> items = iterate(eval(*n.iterable));
        if (n.condition) {
            std::vector<Value> kept;
            for (auto& item : items) {
                FrameGuard frame(*this);
                assign_all(n.targets, item);
                if (truthy(eval(*n.condition))) kept.push_back(std::move(item));
            }
            items = std::move(kept);
        }
        // jinja2 clears its "render the else block" flag at the end of the loop body, so the else
        // block renders unless some iteration ran to the end: also after iterations that all ended
        // in {% continue %} or {% break %}.
        bool completed_an_iteration = false;
        const auto count = static_cast<int64_t>(items.size());
        for (int64_t i = 0; i < count; ++i) {
            FrameGuard frame(*this);
            bind_undefined(n.body);
            assign_all(n.targets, items[static_cast<size_t>(i)]);
            assign("loop", loop_object(items, i));
            const Flow flow = exec_body(n.body.body);
            if (flow == Flow::break_loop) break;
            completed_an_iteration = completed_an_iteration || flow == Flow::normal;
        }
        if (completed_an_iteration || n.otherwise.body.empty()) return Flow::normal;
        return exec_frame(n.otherwise);  // a break here belongs to an enclosing loop
    }

    static Value loop_object(const std::vector<Value>& items, int64_t i) {
        const auto count = static_cast<int64_t>(items.size());
        const auto at = [&](int64_t k) { return items[static_cast<size_t>(k)]; };
        return Value::object(ObjectKind::loop,
                             {{"index", i + 1},
                              {"index0", i},
                              {"revindex", count - i},
                              {"revindex0", count - i - 1},
                              {"first", i == 0},
                              {"last", i == count - 1},
                              {"length", count},
                              {"depth", 1},
                              {"depth0", 0},
                              {"previtem", i > 0 ? at(i - 1) : Value::undefined("there is no previous item")},
                              {"nextitem", i + 1 < count ? at(i + 1) : Value::undefined("there is no next item")}});
    }

    Flow exec_node(const stmt::Set& n) {
        Value value;
        if (n.value) {
            value = eval(*n.value);
        } else {  // {% set x %}...{% endset %}: the body rendered, in a scope of its own
            std::string saved = std::move(out_);
            out_.clear();
            exec_frame(n.body);
            value = std::move(out_);
            out_ = std::move(saved);
        }
        const Target& first = n.targets.front();
        if (first.attribute.empty()) {
            std::vector<std::string> names;
            for (const auto& t : n.targets) names.push_back(t.name);
            assign_all(names, value);
            return Flow::normal;
        }
        const Value ns = lookup(first.name);
        if (ns.kind() != Value::Kind::object || ns.as_object().kind != ObjectKind::namespace_object) {
            throw EvalError("cannot assign attribute on non-namespace object");
        }
        ns.as_object().set(first.attribute, std::move(value));
        return Flow::normal;
    }

    Flow exec_node(const stmt::Break&) { return Flow::break_loop; }
    Flow exec_node(const stmt::Continue&) { return Flow::continue_loop; }

    Flow exec_node(const stmt::Scope& n) { return exec_frame(n.body); }

    // ---- expressions

    Value eval(const Expr& e) {
        return std::visit([&](const auto& node) { return eval_node(node, e.line); }, e.node);
    }

    Value eval_or_none(const ExprPtr& e) { return e ? eval(*e) : Value::none(); }

    CallArgs eval_args(const Arguments& args) {
        CallArgs out;
        for (const auto& a : args.positional) out.positional.push_back(eval(*a));
        for (const auto& [k, a] : args.keyword) out.keyword.emplace_back(k, eval(*a));
        return out;
    }

    Value eval_node(const expr::Literal& n, int) { return n.value; }
    Value eval_node(const expr::Name& n, int) { return lookup(n.name); }

    Value eval_node(const expr::Sequence& n, int) {
        std::vector<Value> items;
        items.reserve(n.items.size());
        for (const auto& item : n.items) items.push_back(eval(*item));
        return Value::list(std::move(items), n.is_tuple);
    }

    Value eval_node(const expr::Mapping& n, int) {
        Entries entries;
        for (const auto& [key_expr, value_expr] : n.items) {
            const Value key = eval(*key_expr);
            if (!key.is_string()) throw EvalError("dict literals in chat templates take string keys only");
            Value value = eval(*value_expr);
            bool replaced = false;
            for (auto& [k, v] : entries) {
                if (k == key.as_string()) v = value, replaced = true;
            }
            if (!replaced) entries.emplace_back(key.as_string(), std::move(value));
        }
        return Value::dict(std::move(entries));
    }

    Value eval_node(const expr::Attribute& n, int) { return get_attribute(eval(*n.object), n.name); }
    Value eval_node(const expr::Subscript& n, int) {
        const Value object = eval(*n.object);
        return get_item(object, eval(*n.key));
    }
    Value eval_node(const expr::Slice& n, int) {
        const Value object = eval(*n.object);
        const Value start = eval_or_none(n.start);
        const Value stop = eval_or_none(n.stop);
        return slice(object, start, stop, eval_or_none(n.step));
    }

    Value eval_node(const expr::Not& n, int) { return !truthy(eval(*n.operand)); }
    Value eval_node(const expr::Negate& n, int) {
        const Value v = eval(*n.operand);
        return n.plus ? unary_plus(v) : negate(v);
    }
    Value eval_node(const expr::Binary& n, int) {
        const Value left = eval(*n.left);
        return binary_op(n.op, left, eval(*n.right));
    }
    Value eval_node(const expr::Logical& n, int) {  // Python's and/or return an operand
        Value left = eval(*n.left);
        if (truthy(left) != n.is_and) return left;
        return eval(*n.right);
    }
    Value eval_node(const expr::Concat& n, int) {
        std::string out;
        for (const auto& part : n.parts) out += to_str(eval(*part));
        return out;
    }
    Value eval_node(const expr::Compare& n, int) {
        Value left = eval(*n.first);
        for (const auto& [op, right_expr] : n.rest) {
            Value right = eval(*right_expr);
            if (!compare(op, left, right)) return false;
            left = std::move(right);
        }
        return true;
    }
    Value eval_node(const expr::Conditional& n, int line) {
        if (truthy(eval(*n.condition))) return eval(*n.then);
        if (n.otherwise) return eval(*n.otherwise);
        return Value::undefined(fmt::format(
            "the inline if-expression on line {} evaluated to false and no else section was defined.", line));
    }

    Value eval_node(const expr::Call& n, int) {
        if (const auto* attribute = std::get_if<expr::Attribute>(&n.callee->node)) {
            const Value self = eval(*attribute->object);
            if (self.is_undefined()) raise_undefined(self);
            const CallArgs args = eval_args(n.args);
            if (auto result = call_method(self, attribute->name, args)) return *result;
            return call_value(get_attribute(self, attribute->name), args);
        }
        const Value callee = eval(*n.callee);
        return call_value(callee, eval_args(n.args));
    }

    Value call_value(const Value& callee, const CallArgs& args) {
        if (callee.kind() == Value::Kind::builtin) {
            Value result = call_builtin(callee.as_builtin(), args, clock_);
            if (callee.as_builtin() == Builtin::make_namespace) namespaces_.push_back(result);
            return result;
        }
        if (callee.is_undefined()) raise_undefined(callee);
        throw EvalError(fmt::format("'{}' object is not callable", type_name(callee)));
    }

    Value eval_node(const expr::Filter& n, int) {
        const Value input = eval(*n.operand);
        return apply_filter(n.id, input, eval_args(n.args));
    }
    Value eval_node(const expr::Test& n, int) {
        const Value input = eval(*n.operand);
        return apply_test(n.id, input, eval_args(n.args)) != n.negated;
    }

    const DictData& context_;
    const std::string& origin_;
    const Clock& clock_;
    std::vector<Entries> frames_;
    std::vector<Value> namespaces_;
    std::string out_;
};

}  // namespace

std::string render(const Frame& program, const DictData& context, const std::string& origin, const Clock& clock) {
    return Renderer(context, origin, clock).run(program);
}

}  // namespace tps::chat
