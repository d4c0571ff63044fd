// GBNF to grammar rules (gbnf_grammar.h). The text is parsed into a tree per rule first, because
// whether something can match "" depends on rules defined anywhere (a fixed point over them), and
// x* with x nullable must become (x less "")*: as written it is left-recursive, which compile()
// refuses. "x less \"\"" of a reference to rule R is a second rule, R less "", made on demand. An
// alternation with several branches that match "" keeps one "" branch, so the matcher reads "" once.
#include "tpserve/engine/structured/gbnf_grammar.h"

#include "gbnf_tree.h"

#include "../tokenizer/utf8.h"
#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <map>
#include <string>
#include <vector>

namespace tps::structured {
namespace {

using gbnf::kNone;
using gbnf::make;
using gbnf::make_repeat;
using gbnf::Node;
using gbnf::NodeId;
using gbnf::RuleDef;
using gbnf::Tree;
constexpr RuleId kNoRule = UINT32_MAX;

bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}
int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

// Recursive descent: rule > alternatives > sequence > postfixed atom.
class Parser {
public:
    Parser(std::string_view text, Tree& tree) : p_(text), tree_(tree) {}

    std::vector<RuleDef> parse() {
        for (size_t at = 0; at < p_.size();) {
            const size_t n = tok::utf8_valid_length(p_, at);
            if (n == 0) fail(at, "invalid UTF-8");
            at += n;
        }
        for (skip_space(); !at_end(); skip_space()) rule();
        for (const auto& [node, at] : refs_) {
            const auto def = names_.find(tree_.nodes()[node].text);
            if (def == names_.end()) fail(at, fmt::format("the rule '{}' is used but never defined", tree_.nodes()[node].text));
            tree_.nodes()[node].rule = def->second;
            tree_.nodes()[node].text.clear();
        }
        if (!names_.contains("root")) throw UsageError("GBNF: the grammar defines no rule 'root' (where it starts)");
        return std::move(rules_);
    }
    uint32_t root() const { return names_.at("root"); }

    // "line L, column C" of an offset (columns count characters).
    static std::string where(std::string_view text, size_t at) {
        const size_t line_start = text.rfind('\n', at == 0 ? 0 : at - 1);
        const size_t from = line_start == std::string_view::npos || at == 0 ? 0 : line_start + 1;
        const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(from), '\n');
        const auto column = 1 + std::count_if(text.begin() + static_cast<std::ptrdiff_t>(from),
                                              text.begin() + static_cast<std::ptrdiff_t>(at),
                                              [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
        return fmt::format("line {}, column {}", line, column);
    }

private:
    [[noreturn]] void fail(size_t at, std::string_view what) const {
        throw UsageError(fmt::format("GBNF: {}: {}", where(p_, at), what));
    }
    bool at_end() const { return pos_ >= p_.size(); }
    char peek() const { return p_[pos_]; }

    void skip_space() {  // spaces, newlines and comments
        for (; !at_end() && std::string_view(" \t\n\r#").find(peek()) != std::string_view::npos; ++pos_) {
            if (peek() == '#') pos_ = std::min(p_.find('\n', pos_), p_.size() - 1);
        }
    }
    size_t name_end(size_t at) const {
        while (at < p_.size() && is_name_char(p_[at])) ++at;
        return at;
    }
    // Whether `name ::=` starts at pos_ (which ends the rule before it).
    bool rule_starts_here() {
        const size_t end = name_end(pos_);
        if (end == pos_) return false;
        const size_t save = pos_;
        pos_ = end;
        skip_space();
        const bool starts = p_.substr(pos_).starts_with("::=");
        pos_ = save;
        return starts;
    }

    void rule() {
        const size_t at = pos_;
        const size_t end = name_end(pos_);
        if (end == pos_) fail(at, fmt::format("expected a rule name (name ::= ...), not '{}'", peek()));
        std::string name(p_.substr(at, end - at));
        pos_ = end;
        skip_space();
        if (!p_.substr(pos_).starts_with("::=")) fail(pos_, fmt::format("expected '::=' after the rule name '{}'", name));
        pos_ += 3;
        const auto index = static_cast<uint32_t>(rules_.size());
        if (const auto it = names_.find(name); it != names_.end()) {
            fail(at, fmt::format("the rule '{}' is defined twice (first at {})", name, where(p_, rules_[it->second].at)));
        }
        names_.emplace(name, index);
        rules_.push_back(RuleDef{std::move(name), at, kNone});
        owner_ = index;
        rules_[index].root = alternatives(std::string_view::npos);
    }

    // `open`: the offset of the '(' of the group being read, npos at a rule's top level.
    NodeId alternatives(size_t open) {
        std::vector<NodeId> branches{sequence(open)};
        while (!at_end() && peek() == '|') {
            ++pos_;
            branches.push_back(sequence(open));
        }
        return tree_.list(Node::Kind::alt, std::move(branches), owner_);
    }

    NodeId sequence(size_t open) {
        std::vector<NodeId> items;
        for (;;) {
            skip_space();
            if (at_end() || (peek() != ')' && rule_starts_here())) {
                if (open != std::string_view::npos) fail(open, "an unterminated group (no ')' closes the '(')");
                break;
            }
            if (peek() == '|') break;
            if (peek() == ')') {
                if (open == std::string_view::npos) fail(pos_, "a ')' that closes no group");
                break;
            }
            const NodeId item = postfix(atom());
            const Node& n = tree_.nodes()[item];
            if (n.kind == Node::Kind::concat) {
                const std::vector<NodeId> children = n.children;  // a group's items, spliced
                items.insert(items.end(), children.begin(), children.end());
            } else if (n.kind != Node::Kind::empty) {
                items.push_back(item);
            }
        }
        return tree_.list(Node::Kind::concat, std::move(items), owner_);
    }

    NodeId atom() {
        const size_t at = pos_;
        const char c = peek();
        if (c == '"') return string_literal();
        if (c == '[') return char_class();
        if (c == '.') {
            ++pos_;
            return chars(complement(std::vector<CodePointRange>{}));
        }
        if (c == '(') {
            ++pos_;
            if (++depth_ > kMaxGbnfNesting) fail(at, fmt::format("groups nested deeper than {}", kMaxGbnfNesting));
            const NodeId inner = alternatives(at);
            ++pos_;  // the ')'
            --depth_;
            return inner;
        }
        if (is_name_char(c)) {
            pos_ = name_end(pos_);
            Node ref = make(Node::Kind::ref, owner_);
            ref.text = p_.substr(at, pos_ - at);  // the name, until parse() resolves it
            refs_.emplace_back(tree_.add(std::move(ref)), at);
            return refs_.back().first;
        }
        if (c == '*' || c == '+' || c == '?' || c == '{') fail(at, fmt::format("a '{}' with nothing to repeat", c));
        size_t n = tok::utf8_char_length(static_cast<unsigned char>(c));
        fail(at, fmt::format("unexpected character '{}'", p_.substr(at, n)));
    }

    // Postfix operators after an atom, each applying to what comes before it.
    NodeId postfix(NodeId node) {
        for (int ops = 0;; ++ops) {
            const size_t save = pos_;
            skip_space();
            if (at_end() || (peek() != '*' && peek() != '+' && peek() != '?' && peek() != '{')) {
                pos_ = save;
                return node;
            }
            const size_t at = pos_;
            if (depth_ + ops >= kMaxGbnfNesting) fail(at, fmt::format("groups and postfixes nested deeper than {}", kMaxGbnfNesting));
            int64_t min = peek() == '+' ? 1 : 0, max = peek() == '?' ? 1 : -1;
            if (peek() == '{') {
                braces(min, max);
            } else {
                ++pos_;
            }
            node = tree_.add(make_repeat(node, min, max, owner_));
        }
    }

    // {m} {m,} {m,n}, spaces allowed inside (as llama.cpp).
    void braces(int64_t& min, int64_t& max) {
        const size_t at = pos_++;
        const auto number = [&](int64_t& value) {  // saturates far above kMaxRepeat
            skip_space();
            if (at_end() || peek() < '0' || peek() > '9') fail(pos_, "expected a number in the repetition {...}");
            for (value = 0; !at_end() && peek() >= '0' && peek() <= '9'; ++pos_) {
                value = std::min<int64_t>(value * 10 + (peek() - '0'), int64_t{1} << 40);
            }
            skip_space();
        };
        number(min);
        max = min;
        if (!at_end() && peek() == ',') {
            ++pos_;
            skip_space();
            max = -1;
            if (!at_end() && peek() >= '0' && peek() <= '9') number(max);
        }
        if (at_end() || peek() != '}') fail(at_end() ? at : pos_, "expected ',' or '}' in the repetition {...}");
        ++pos_;
        const std::string_view text = p_.substr(at, pos_ - at);
        if (min > GrammarBuilder::kMaxRepeat || max > GrammarBuilder::kMaxRepeat) {
            fail(at, fmt::format("a repetition count above the {} supported in {}", GrammarBuilder::kMaxRepeat, text));
        }
        if (max >= 0 && max < min) fail(at, fmt::format("the repetition {} has its maximum below its minimum", text));
    }

    NodeId chars(std::vector<CodePointRange> ranges) {
        Node n = make(Node::Kind::chars, owner_);
        n.ranges = std::move(ranges);
        return tree_.add(std::move(n));
    }

    NodeId string_literal() {
        const size_t open = pos_++;
        std::string text;
        for (;;) {
            if (at_end()) fail(open, "an unterminated string (no '\"' closes it)");
            if (peek() == '"') break;
            if (peek() == '\\') {
                tok::utf8_append(text, escape(open, "string"));
            } else {
                text += p_[pos_++];  // (UTF-8 checked already: a character's bytes follow in turn)
            }
        }
        ++pos_;
        Node n = make(text.empty() ? Node::Kind::empty : Node::Kind::bytes, owner_);
        n.text = std::move(text);
        return tree_.add(std::move(n));
    }

    NodeId char_class() {
        const size_t open = pos_++;
        const bool negated = !at_end() && peek() == '^';
        if (negated) ++pos_;
        std::vector<CodePointRange> ranges;
        while (at_end() || peek() != ']') {
            const size_t lo_at = pos_;
            const char32_t lo = class_char(open);
            char32_t hi = lo;
            if (pos_ + 1 < p_.size() && peek() == '-' && p_[pos_ + 1] != ']') {  // else '-' is itself
                ++pos_;
                hi = class_char(open);
                if (hi < lo) fail(lo_at, fmt::format("the range '{}' is the wrong way round", p_.substr(lo_at, pos_ - lo_at)));
            }
            ranges.push_back({lo, hi});
        }
        ++pos_;
        ranges = negated ? complement(ranges) : complement(complement(ranges));  // sorted and merged
        if (ranges.empty()) fail(open, "an empty class (it admits no character)");
        return chars(std::move(ranges));
    }

    char32_t class_char(size_t open) {
        if (at_end()) fail(open, "an unterminated class (no ']' closes the '[')");
        if (peek() == '\\') return escape(open, "class");
        size_t n = 0;
        const char32_t c = tok::utf8_decode(p_, pos_, &n);
        pos_ += n;
        return c;
    }

    // The escape at pos_ (a backslash) inside the string or class opened at `open`.
    char32_t escape(size_t open, std::string_view inside) {
        const size_t at = pos_++;
        if (at_end()) fail(open, fmt::format("an unterminated {} (it ends in a backslash)", inside));
        const char c = p_[pos_++];
        static constexpr std::string_view kSimple = "n\nr\rt\t\\\\\"\"[[]]";  // escape letter, character
        if (const size_t k = kSimple.find(c); k != std::string_view::npos && k % 2 == 0) return kSimple[k + 1];
        if (c == 'x' || c == 'u' || c == 'U') return hex_escape(at, c == 'x' ? 2 : c == 'u' ? 4 : 8);
        const size_t n = tok::utf8_char_length(static_cast<unsigned char>(c));
        fail(at, fmt::format("an unknown escape '\\{}' (known: \\n \\r \\t \\\\ \\\" \\[ \\] \\xHH \\uHHHH \\UHHHHHHHH)",
                             p_.substr(at + 1, n)));
    }

    char32_t hex_escape(size_t at, int digits) {
        uint64_t value = 0;
        for (int i = 0; i < digits; ++i, ++pos_) {
            const int h = at_end() ? -1 : hex_value(peek());
            if (h < 0) fail(at, fmt::format("the escape '\\{}' needs {} hex digits", p_[at + 1], digits));
            value = value * 16 + static_cast<uint64_t>(h);
        }
        if (value > kMaxCodePoint) fail(at, fmt::format("the escape '{}' is past U+10FFFF", p_.substr(at, pos_ - at)));
        if (value >= 0xD800 && value <= 0xDFFF) {
            fail(at, fmt::format("the escape '{}' is a surrogate, which is no character", p_.substr(at, pos_ - at)));
        }
        return static_cast<char32_t>(value);
    }

    std::string_view p_;
    size_t pos_ = 0;
    Tree& tree_;
    int depth_ = 0;
    uint32_t owner_ = 0;
    std::vector<RuleDef> rules_;
    std::map<std::string, uint32_t, std::less<>> names_;
    std::vector<std::pair<NodeId, size_t>> refs_;  // reference nodes (name in text) and their offsets
};

// The trees to rules. Each GBNF rule is one grammar rule; a group, alternation or class inside
// it gets a helper rule named after it. Rules are made first and given alternatives from a work
// list, so forward references and recursion need no recursion here.
class Emitter {
public:
    Emitter(GrammarBuilder& g, Tree& tree, const std::vector<RuleDef>& rules) : g_(g), t_(tree), rules_(rules) {}

    RuleId emit(uint32_t root) {
        for (const RuleDef& r : rules_) rule_ids_.push_back(g_.add_rule(r.name));
        stripped_ids_.assign(rules_.size(), kNoRule);
        for (size_t r = 0; r < rules_.size(); ++r) work_.emplace_back(rule_ids_[r], rules_[r].root);
        while (!work_.empty()) {
            const auto [rule, node] = work_.front();
            work_.pop_front();
            for (auto& alt : alternatives(node)) g_.add_alternative(rule, std::move(alt));
        }
        return rule_ids_[root];
    }

private:
    std::vector<std::vector<Element>> alternatives(NodeId id) {
        const Node node = t_.at(id);  // copied: strip() may add nodes
        if (node.kind != Node::Kind::alt) return {sequence(id)};
        const auto nullable = [&](NodeId c) { return t_.at(c).nullable; };
        const bool merge = std::count_if(node.children.begin(), node.children.end(), nullable) > 1;
        std::vector<std::vector<Element>> out;
        for (const NodeId c : node.children) {
            const NodeId branch = merge ? t_.strip(c) : c;
            if (branch != kNone) out.push_back(sequence(branch));
        }
        if (merge) out.emplace_back();  // the one "" branch
        return out;
    }

    std::vector<Element> sequence(NodeId id) {
        std::vector<Element> out;
        if (t_.at(id).kind != Node::Kind::concat) {
            append(id, out);
            return out;
        }
        const std::vector<NodeId> children = t_.at(id).children;
        for (const NodeId c : children) append(c, out);
        return out;
    }

    void append(NodeId id, std::vector<Element>& out) {
        const Node& n = t_.at(id);
        switch (n.kind) {
            case Node::Kind::empty: return;
            case Node::Kind::bytes:
                for (const char b : n.text) out.push_back(GrammarBuilder::byte(static_cast<unsigned char>(b)));
                return;
            case Node::Kind::chars:
                if (n.ranges.back().last < 0x80) {
                    ByteSet set;
                    for (const auto& r : n.ranges) set.add_range(static_cast<unsigned char>(r.first), static_cast<unsigned char>(r.last));
                    out.push_back(GrammarBuilder::bytes(set));
                } else if (n.ranges.size() == 1 && n.ranges[0].first == n.ranges[0].last) {
                    std::string text;
                    tok::utf8_append(text, n.ranges[0].first);
                    for (const char b : text) out.push_back(GrammarBuilder::byte(static_cast<unsigned char>(b)));
                } else {
                    out.push_back(GrammarBuilder::ref(class_rule(n.ranges)));
                }
                return;
            case Node::Kind::ref:
            case Node::Kind::ref_nonempty:
            case Node::Kind::concat:
            case Node::Kind::alt:
            case Node::Kind::repeat: out.push_back(GrammarBuilder::ref(rule_of(id))); return;
        }
    }

    // The rule that matches what node `id` matches.
    RuleId rule_of(NodeId id) {
        const Node n = t_.at(id);
        if (n.kind == Node::Kind::ref) return rule_ids_[n.rule];
        if (n.kind == Node::Kind::ref_nonempty) return stripped_rule(n.rule);
        if (node_rules_.size() <= id) node_rules_.resize(t_.nodes().size(), kNoRule);
        RuleId& memo = node_rules_[id];
        if (memo != kNoRule) return memo;
        if (n.kind == Node::Kind::repeat) {
            const RuleId child = rule_of(n.children[0]);  // (repeat() made it never nullable)
            const RuleId r = n.min == 0 && n.max == 1 ? g_.optional(child) : g_.repeat(child, n.min, n.max);
            node_rules_[id] = r;  // (memo may dangle: rule_of resized node_rules_)
            return r;
        }
        memo = g_.add_rule(rules_[n.owner].name);
        work_.emplace_back(memo, id);
        return memo;
    }

    // Rule r less "" (r both nullable and non-empty), made on first use.
    RuleId stripped_rule(uint32_t r) {
        if (stripped_ids_[r] == kNoRule) {
            stripped_ids_[r] = g_.add_rule(rules_[r].name + " (non-empty)");
            work_.emplace_back(stripped_ids_[r], t_.strip(rules_[r].root));
        }
        return stripped_ids_[r];
    }

    // One rule per distinct non-ASCII class: `.` alone spells out several byte-range sequences.
    RuleId class_rule(const std::vector<CodePointRange>& ranges) {
        std::vector<std::pair<char32_t, char32_t>> key;
        for (const CodePointRange& r : ranges) key.emplace_back(r.first, r.last);
        if (const auto it = classes_.find(key); it != classes_.end()) return it->second;
        const RuleId rule = g_.code_points(ranges, "[class]");
        classes_.emplace(std::move(key), rule);
        return rule;
    }

    GrammarBuilder& g_;
    Tree& t_;
    const std::vector<RuleDef>& rules_;
    std::vector<RuleId> rule_ids_, stripped_ids_, node_rules_;
    std::deque<std::pair<RuleId, NodeId>> work_;
    std::map<std::vector<std::pair<char32_t, char32_t>>, RuleId> classes_;
};

// The builder's messages ("grammar: the rule 'expr' is left-recursive"), marked as ours
UsageError marked(const UsageError& e) {
    std::string_view what = e.what();
    if (what.starts_with("grammar: ")) what.remove_prefix(9);
    std::string message = "GBNF: ";
    message += what;
    return UsageError(message);
}

}  // namespace

RuleId add_gbnf(GrammarBuilder& g, std::string_view text) {
    TPS_CHECK_AS(UsageError, text.size() <= kMaxGbnfBytes, "GBNF: the grammar is {} bytes, more than the {} supported",
                 text.size(), kMaxGbnfBytes);
    Tree tree;
    Parser parser(text, tree);
    const std::vector<RuleDef> rules = parser.parse();
    tree.finish(rules);
    try {
        return Emitter(g, tree, rules).emit(parser.root());
    } catch (const UsageError& e) {
        throw marked(e);
    }
}

std::shared_ptr<const CompiledGrammar> gbnf_grammar(std::string_view text) {
    GrammarBuilder g;
    const RuleId root = add_gbnf(g, text);
    try {
        return g.compile(root);
    } catch (const UsageError& e) {
        throw marked(e);
    }
}

}  // namespace tps::structured
