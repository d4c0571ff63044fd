// Regular expressions to grammar rules (regex_grammar.h). The pattern is parsed into a small tree
// first, and the tree then becomes rules. The tree is there because a repetition of something that
// can match "" must be rewritten, x* with x nullable as (x minus "")*: as written it would make a
// left-recursive grammar, which compile() refuses, and a very ambiguous one. For the same reason
// every node matches "" in at most one way (an alternation keeps one "" branch, Tree::merge_branches):
// the matcher follows each way separately, so (|)(|)...(|) would otherwise read "" 2^n times.
// Nodes are made children first, so the rules are made in one loop over the nodes, without
// recursing down long concatenations.
#include "tpserve/engine/structured/regex_grammar.h"

#include "../tokenizer/utf8.h"
#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tps::structured {
namespace {

using NodeId = uint32_t;
constexpr NodeId kNone = UINT32_MAX;

struct Node {
    enum class Kind : uint8_t { empty, chars, concat, alt, repeat };
    Kind kind = Kind::empty;
    bool nullable = true;
    std::vector<CodePointRange> ranges;  // chars: sorted, merged, no surrogates, not empty
    std::vector<NodeId> children;        // concat and alt (two or more); repeat: one, never nullable
    int64_t min = 0;                     // repeat
    int64_t max = 0;                     // repeat; < 0: no limit
};

// The tree of a pattern, in the order its nodes were made (a node's children come before it).
class Tree {
public:
    const std::vector<Node>& nodes() const { return nodes_; }

    NodeId empty() { return add(Node{}); }
    NodeId chars(std::vector<CodePointRange> ranges) {
        return add(Node{Node::Kind::chars, false, std::move(ranges), {}, 0, 0});
    }
    // A sequence or a choice of `items`; one item is itself and none is "" (or kNone for a choice).
    NodeId list(Node::Kind kind, std::vector<NodeId> items) {
        const auto nullable = [&](NodeId c) { return nodes_[c].nullable; };
        if (kind == Node::Kind::alt) items = merge_branches(std::move(items));
        if (items.size() <= 1) return items.empty() ? (kind == Node::Kind::alt ? kNone : empty()) : items[0];
        const bool n = kind == Node::Kind::alt ? std::any_of(items.begin(), items.end(), nullable)
                                               : std::all_of(items.begin(), items.end(), nullable);
        return add(Node{kind, n, {}, std::move(items), 0, 0});
    }
    NodeId repeat(NodeId child, int64_t min, int64_t max) {
        if (max == 0) return empty();
        if (nodes_[child].nullable) {
            // x{n,m} with x nullable is (x minus ""){0,m}: "" pads out any count below n. And
            // (x1 x2 ...)* with every xi nullable is (x1|x2|...)*, whose readings of a text are
            // far fewer (after a byte in xi, the rest of the sequence need not be walked).
            if (max < 0 && nodes_[child].kind == Node::Kind::concat) {
                child = list(Node::Kind::alt, nodes_[child].children);
            }
            child = strip(child);
            min = 0;
            if (child == kNone) return empty();
        }
        if (min == 1 && max == 1) return child;
        return add(Node{Node::Kind::repeat, min == 0, {}, {child}, min, max});
    }

private:
    NodeId add(Node n) {
        nodes_.push_back(std::move(n));
        return static_cast<NodeId>(nodes_.size() - 1);
    }

    // An alternation's branches with at most one that matches "": when several do, each becomes
    // its non-empty form and one "" branch is added (x?|y* is (x|y+)?, (|) is ""). Single
    // characters and classes merge into one class, so that (a|b) is read once, not per branch.
    std::vector<NodeId> merge_branches(std::vector<NodeId> items) {
        const auto nullable = [&](NodeId c) { return nodes_[c].nullable; };
        if (std::count_if(items.begin(), items.end(), nullable) > 1) {
            std::vector<NodeId> merged;
            for (const NodeId c : items) {
                if (const NodeId s = strip(c); s != kNone) merged.push_back(s);
            }
            merged.push_back(empty());
            items = std::move(merged);
        }
        const auto is_chars = [&](NodeId c) { return nodes_[c].kind == Node::Kind::chars; };
        if (std::count_if(items.begin(), items.end(), is_chars) <= 1) return items;
        std::vector<CodePointRange> ranges;
        for (const NodeId c : items) {
            if (is_chars(c)) ranges.insert(ranges.end(), nodes_[c].ranges.begin(), nodes_[c].ranges.end());
        }
        std::erase_if(items, is_chars);
        items.insert(items.begin(), chars(complement(complement(ranges))));  // sorted and merged
        return items;
    }

    // A node for what `n` matches less "" (kNone when that is nothing); made once per node.
    NodeId strip(NodeId n) {
        if (!nodes_[n].nullable) return n;
        if (const auto it = stripped_.find(n); it != stripped_.end()) return it->second;
        const NodeId s = strip_anew(n);
        stripped_.emplace(n, s);
        return s;
    }
    NodeId strip_anew(NodeId n) {
        const std::vector<NodeId> children = nodes_[n].children;  // copied: add() moves nodes_
        switch (nodes_[n].kind) {
            case Node::Kind::empty:
            case Node::Kind::chars: return kNone;
            case Node::Kind::repeat: return repeat(children[0], 1, nodes_[n].max);  // nullable: min is 0
            case Node::Kind::alt: {
                std::vector<NodeId> branches;
                for (const NodeId c : children) {
                    if (const NodeId s = strip(c); s != kNone) branches.push_back(s);
                }
                return list(Node::Kind::alt, std::move(branches));
            }
            case Node::Kind::concat: {
                // Every child is nullable. With T(i) = children i.. and S(i) = T(i) less "":
                // S(i) = strip(child i) T(i+1) | S(i+1), built from the right so that each T and
                // S is made once (linear in the children, where spelling each S out is quadratic).
                NodeId tail = children.back();
                NodeId stripped = strip(children.back());
                for (size_t i = children.size() - 1; i-- > 0;) {
                    std::vector<NodeId> branches;
                    const NodeId s = strip(children[i]);
                    if (s != kNone) branches.push_back(list(Node::Kind::concat, {s, tail}));
                    if (stripped != kNone) branches.push_back(stripped);
                    stripped = list(Node::Kind::alt, std::move(branches));
                    if (i > 0) tail = list(Node::Kind::concat, {children[i], tail});
                }
                return stripped;
            }
        }
        return kNone;
    }

    std::vector<Node> nodes_;
    std::map<NodeId, NodeId> stripped_;  // strip()'s answers
};

struct Quantifier {
    int64_t min = 0;
    int64_t max = 0;  // < 0: no limit
    size_t end = 0;   // the offset after it
};

// A class member or an escape: one character, or a set such as \d.
struct Item {
    bool is_set = false;
    char32_t c = 0;
    std::vector<CodePointRange> set;
};

const std::vector<CodePointRange> kDigit = {{'0', '9'}};
const std::vector<CodePointRange> kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const std::vector<CodePointRange> kSpace = {{'\t', '\r'}, {' ', ' '}};  // \t \n \v \f \r and space

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ascii_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_surrogate(char32_t c) { return c >= 0xD800 && c <= 0xDFFF; }
int hex_value(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

// Recursive descent over the pattern: alternation > branch > quantified atom.
class Parser {
public:
    explicit Parser(std::string_view pattern) : p_(pattern) {}

    NodeId parse() {
        for (size_t at = 0; at < p_.size();) decode(at);  // invalid UTF-8 fails here, once
        if (!at_end() && peek() == '^') ++pos_;
        const NodeId root = alternation();
        if (!at_end()) fail(pos_, "an unbalanced ')'");
        return root;
    }
    const Tree& tree() const { return tree_; }

private:
    [[noreturn]] void fail(size_t at, std::string_view what) const {
        throw UsageError(fmt::format("regular expression: {} at offset {} of the pattern", what, at));
    }
    [[noreturn]] void unsupported(size_t at, std::string_view construct) const {
        throw UsageError(
            fmt::format("regular expression: {} (at offset {} of the pattern) is not supported", construct, at));
    }
    bool at_end() const { return pos_ >= p_.size(); }
    char peek() const { return p_[pos_]; }
    bool next_is(std::string_view s) const { return p_.substr(pos_).starts_with(s); }

    // One UTF-8 character at `at`, which moves past it.
    char32_t decode(size_t& at) const {
        if (static_cast<unsigned char>(p_[at]) < 0x80) return p_[at++];
        if (tok::utf8_valid_length(p_, at) == 0) fail(at, fmt::format("invalid UTF-8 ({})", utf8_fault(at)));
        size_t n = 0;
        const char32_t c = tok::utf8_decode(p_, at, &n);
        at += n;
        return c;
    }

    // What is wrong with the bytes at `at`, which are no UTF-8 character.
    std::string_view utf8_fault(size_t at) const {
        const auto b0 = static_cast<unsigned char>(p_[at]);
        if (b0 < 0xC0 || b0 >= 0xF8) return "a byte that starts no character";
        const size_t n = tok::utf8_char_length(b0);
        for (size_t i = 1; i < n; ++i) {
            if (at + i >= p_.size() || (static_cast<unsigned char>(p_[at + i]) & 0xC0) != 0x80) {
                return "a truncated character";
            }
        }
        return "an overlong form or a surrogate";  // or past U+10FFFF
    }

    NodeId alternation() {
        std::vector<NodeId> branches{branch()};
        while (!at_end() && peek() == '|') {
            ++pos_;
            branches.push_back(branch());
        }
        return tree_.list(Node::Kind::alt, std::move(branches));
    }

    NodeId branch() {
        std::vector<NodeId> items;
        while (!at_end() && peek() != '|' && peek() != ')') {
            const NodeId item = quantified(atom());
            const Node& n = tree_.nodes()[item];
            if (n.kind == Node::Kind::concat) {
                items.insert(items.end(), n.children.begin(), n.children.end());  // a group's, spliced
            } else if (n.kind != Node::Kind::empty) {
                items.push_back(item);
            }
        }
        return tree_.list(Node::Kind::concat, std::move(items));
    }

    // The quantifier at `at`, if one starts there. Python's rule for braces: {n} {n,} {,m} {n,m}
    // {,} are quantifiers, any other `{` is a literal (ECMAScript's unicode mode refuses it).
    std::optional<Quantifier> quantifier_at(size_t at) const {
        if (at >= p_.size()) return std::nullopt;
        if (p_[at] == '*' || p_[at] == '+' || p_[at] == '?') {
            return Quantifier{p_[at] == '+' ? 1 : 0, p_[at] == '?' ? 1 : -1, at + 1};
        }
        if (p_[at] != '{') return std::nullopt;
        size_t i = at + 1;
        const auto number = [&](int64_t& value) {  // saturates far above kMaxRepeat
            const size_t start = i;
            for (value = 0; i < p_.size() && is_digit(p_[i]); ++i) {
                value = std::min<int64_t>(value * 10 + (p_[i] - '0'), int64_t{1} << 40);
            }
            return i > start;
        };
        int64_t lo = 0, hi = 0;
        const bool has_lo = number(lo);
        const bool comma = i < p_.size() && p_[i] == ',';
        const bool has_hi = comma && (++i, number(hi));
        if (i >= p_.size() || p_[i] != '}' || (!has_lo && !comma)) return std::nullopt;
        const Quantifier q{lo, comma ? (has_hi ? hi : -1) : lo, i + 1};
        const std::string_view text = p_.substr(at, q.end - at);
        if (q.min > GrammarBuilder::kMaxRepeat || q.max > GrammarBuilder::kMaxRepeat) {
            fail(at, fmt::format("a repetition count above the {} supported, {},", GrammarBuilder::kMaxRepeat, text));
        }
        if (q.max >= 0 && q.max < q.min) fail(at, fmt::format("a repetition {} whose maximum is below its minimum", text));
        return q;
    }

    NodeId quantified(NodeId atom) {
        const std::optional<Quantifier> q = quantifier_at(pos_);
        if (!q) return atom;
        pos_ = q->end;
        if (!at_end() && peek() == '?') {
            ++pos_;  // lazy: the same strings
        } else if (!at_end() && peek() == '+') {
            unsupported(pos_, "a possessive quantifier (a quantifier followed by '+')");
        }
        if (quantifier_at(pos_)) fail(pos_, "a quantifier after a quantifier (multiple repeat)");
        return tree_.repeat(atom, q->min, q->max);
    }

    NodeId atom() {
        const size_t at = pos_;
        switch (peek()) {
            case '*':
            case '+':
            case '?': fail(at, fmt::format("a quantifier '{}' with nothing to repeat", peek()));
            case '{':
                if (quantifier_at(at)) fail(at, "a quantifier '{' with nothing to repeat");
                break;  // a literal
            case '(': return group();
            case '[': return char_class();
            case '.': ++pos_; return tree_.chars(complement(std::vector<CodePointRange>{{'\n', '\n'}}));
            case '\\': return item_node(escape(false));
            case '^': unsupported(at, "the anchor '^' other than as the first character");
            case '$':
                if (at + 1 != p_.size()) unsupported(at, "the anchor '$' other than as the last character");
                ++pos_;
                return tree_.empty();
            default: break;
        }
        const char32_t c = decode(pos_);
        return tree_.chars({{c, c}});
    }

    NodeId item_node(Item item) {
        return tree_.chars(item.is_set ? std::move(item.set) : std::vector<CodePointRange>{{item.c, item.c}});
    }

    NodeId group() {
        const size_t open = pos_++;
        if (++depth_ > kMaxRegexNesting) unsupported(open, fmt::format("nesting groups deeper than {}", kMaxRegexNesting));
        if (next_is("?<=") || next_is("?<!")) unsupported(open, "a lookbehind assertion (?<= or (?<!");
        if (next_is("?=") || next_is("?!")) unsupported(open, "a lookahead assertion (?= or (?!");
        if (next_is("?P=")) unsupported(open, "a backreference (?P=name)");
        if (next_is("?:")) {
            pos_ += 2;
        } else if (next_is("?<") || next_is("?P<")) {
            pos_ += next_is("?<") ? 2 : 3;
            group_name(open);
        } else if (next_is("?")) {
            const std::string_view text = p_.substr(open, std::min<size_t>(3, p_.size() - open));
            unsupported(open, fmt::format("the inline flag or group extension '{}' (only (?: (?<name> (?P<name> are)",
                                          text));
        }
        const NodeId inner = alternation();
        if (at_end()) fail(open, "an unbalanced '(' (no ')' closes it)");
        ++pos_;
        --depth_;
        return inner;
    }

    void group_name(size_t open) {
        const size_t start = pos_;
        while (!at_end() && peek() != '>') ++pos_;
        if (at_end()) fail(open, "an unterminated group name (no '>')");
        const std::string name(p_.substr(start, pos_++ - start));
        const auto name_char = [](char c) { return is_ascii_alnum(c) || c == '_' || static_cast<unsigned char>(c) >= 0x80; };
        if (name.empty() || is_digit(name[0]) || !std::all_of(name.begin(), name.end(), name_char)) {
            fail(start, fmt::format("an invalid group name '{}'", name));
        }
        if (!names_.insert(name).second) fail(start, fmt::format("the group name '{}' used twice", name));
    }

    NodeId char_class() {
        const size_t open = pos_++;
        const bool negated = !at_end() && peek() == '^';
        if (negated) ++pos_;
        const size_t first = pos_;
        std::vector<CodePointRange> ranges;
        while (at_end() || peek() != ']' || pos_ == first) {  // a ']' first is a literal
            if (at_end() && p_.substr(first).starts_with("]")) {
                fail(open, "an empty class [] or an unterminated class (a ']' right after '[' or '[^' is a literal)");
            }
            if (at_end()) fail(open, "an unterminated class (no ']' closes the '[')");
            const size_t lo_at = pos_;
            const Item lo = class_item();
            if (pos_ + 1 < p_.size() && peek() == '-' && p_[pos_ + 1] != ']') {  // else '-' is a literal
                ++pos_;
                const Item hi = class_item();
                const std::string_view text = p_.substr(lo_at, pos_ - lo_at);
                if (lo.is_set || hi.is_set) {
                    fail(lo_at, fmt::format("a range '{}' with a class such as \\d as an end", text));
                }
                if (hi.c < lo.c) fail(lo_at, fmt::format("the range '{}' the wrong way round", text));
                ranges.push_back({lo.c, hi.c});
            } else if (lo.is_set) {
                ranges.insert(ranges.end(), lo.set.begin(), lo.set.end());
            } else {
                ranges.push_back({lo.c, lo.c});
            }
        }
        ++pos_;
        ranges = negated ? complement(ranges) : complement(complement(ranges));  // sorted and merged
        if (ranges.empty()) fail(open, "a class that admits no character");
        return tree_.chars(std::move(ranges));
    }

    Item class_item() { return peek() == '\\' ? escape(true) : Item{false, decode(pos_), {}}; }

    // The escape at pos_ (a backslash), outside or inside a class.
    Item escape(bool in_class) {
        const size_t at = pos_++;
        if (at_end()) fail(at, "a backslash at the end of the pattern");
        const char c = peek();
        if (static_cast<unsigned char>(c) >= 0x80) return Item{false, decode(pos_), {}};
        ++pos_;
        const auto set = [](const std::vector<CodePointRange>& ranges) { return Item{true, 0, ranges}; };
        const auto one = [](char32_t ch) { return Item{false, ch, {}}; };
        static constexpr std::string_view kControls = "t\tn\nr\rf\fv\v";  // letter, character
        if (const size_t k = kControls.find(c); k != std::string_view::npos && k % 2 == 0) return one(kControls[k + 1]);
        switch (c) {
            case 'd': return set(kDigit);
            case 'D': return set(complement(kDigit));
            case 'w': return set(kWord);
            case 'W': return set(complement(kWord));
            case 's': return set(kSpace);
            case 'S': return set(complement(kSpace));
            case '0':
                if (!at_end() && is_digit(peek())) unsupported(at, "an octal escape (\\0 followed by a digit; write \\xHH)");
                return one(0);
            case 'x': return one(hex_digits(at, 2));
            case 'u': return one(unicode_escape(at));
            case 'b':
                if (in_class) return one('\b');
                unsupported(at, "a word boundary \\b");
            case 'B': unsupported(at, "a word boundary \\B");
            case 'A':
            case 'Z':
            case 'z':
            case 'G': unsupported(at, fmt::format("the anchor \\{}", c));
            case 'k': unsupported(at, "a backreference \\k<name>");
            case 'p':
            case 'P': unsupported(at, fmt::format("a Unicode property class \\{}", c));
            default: break;
        }
        if (is_digit(c)) unsupported(at, fmt::format("a backreference (or octal escape) \\{}", c));
        if (is_ascii_alnum(c)) unsupported(at, fmt::format("the unknown escape \\{}", c));
        return one(static_cast<unsigned char>(c));  // \. \\ \/ \- \[ and the like: the character itself
    }

    // `count` hex digits at pos_, for the escape at `at`.
    char32_t hex_digits(size_t at, int count) {
        char32_t value = 0;
        for (int i = 0; i < count; ++i, ++pos_) {
            const int h = at_end() ? -1 : hex_value(peek());
            if (h < 0) fail(at, fmt::format("an escape \\{} without its {} hex digits", p_[at + 1], count));
            value = value * 16 + static_cast<char32_t>(h);
        }
        return value;
    }

    // \uHHHH (two of which can make a surrogate pair) or \u{H...}, after the "\u".
    char32_t unicode_escape(size_t at) {
        if (!at_end() && peek() == '{') {
            char32_t value = 0;
            const size_t first = ++pos_;
            for (; !at_end() && hex_value(peek()) >= 0; ++pos_) {
                value = std::min<char32_t>(value * 16 + static_cast<char32_t>(hex_value(peek())), kMaxCodePoint + 1);
            }
            if (at_end() || peek() != '}' || pos_ == first) fail(at, "an escape \\u{...} without hex digits and a '}'");
            ++pos_;
            if (value > kMaxCodePoint) fail(at, "an escape \\u{...} past U+10FFFF");
            if (is_surrogate(value)) fail(at, "a surrogate code point \\u{...}, which is no character");
            return value;
        }
        const char32_t value = hex_digits(at, 4);
        if (value >= 0xD800 && value <= 0xDBFF && next_is("\\u")) {
            const size_t low_at = pos_;
            pos_ += 2;
            const char32_t low = hex_digits(low_at, 4);
            if (low >= 0xDC00 && low <= 0xDFFF) return 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00);
        }
        if (is_surrogate(value)) fail(at, "a lone surrogate \\uHHHH, which is no character (a pair makes one)");
        return value;
    }

    std::string_view p_;
    size_t pos_ = 0;
    int depth_ = 0;
    std::set<std::string> names_;
    Tree tree_;
};

// --- the tree to rules ---

class Emitter {
public:
    Emitter(GrammarBuilder& g, const std::vector<Node>& nodes) : g_(g), nodes_(nodes), rules_(nodes.size()) {}

    RuleId emit(NodeId root) {
        // which nodes need a rule: children come before parents, so one pass down the ids
        std::vector<char> needed(nodes_.size(), 0);
        needed[root] = 1;
        const auto need = [&](NodeId parent, NodeId c, bool always) {
            TPS_CHECK(c < parent, "regex: node {} refers to the later node {}", parent, c);
            if (always || !inline_element(c)) needed[c] = 1;
        };
        for (NodeId id = root + 1; id-- > 0;) {
            if (!needed[id]) continue;
            const Node& n = nodes_[id];
            for (const NodeId c : n.children) {
                if (n.kind == Node::Kind::alt && nodes_[c].kind == Node::Kind::concat) {
                    for (const NodeId cc : nodes_[c].children) need(id, cc, false);  // a branch's items, inline
                } else {
                    need(id, c, n.kind == Node::Kind::repeat);
                }
            }
        }
        for (NodeId id = 0; id <= root; ++id) {
            if (needed[id]) rules_[id] = rule_for(id);
        }
        return rules_[root];
    }

private:
    // A node that is a few elements of its parent's alternative rather than a rule of its own.
    bool inline_element(NodeId id) const {
        const Node& n = nodes_[id];
        if (n.kind != Node::Kind::chars) return n.kind == Node::Kind::empty;
        return n.ranges.back().last < 0x80 || (n.ranges.size() == 1 && n.ranges[0].first == n.ranges[0].last);
    }

    void append(NodeId id, std::vector<Element>& out) const {
        const Node& n = nodes_[id];
        if (n.kind == Node::Kind::empty) return;
        if (!inline_element(id)) {
            out.push_back(GrammarBuilder::ref(rules_[id]));
        } else if (n.ranges.back().last < 0x80) {
            ByteSet set;
            for (const CodePointRange& r : n.ranges) {
                set.add_range(static_cast<unsigned char>(r.first), static_cast<unsigned char>(r.last));
            }
            out.push_back(GrammarBuilder::bytes(set));
        } else {
            std::string text;
            tok::utf8_append(text, n.ranges[0].first);
            for (const char b : text) out.push_back(GrammarBuilder::byte(static_cast<unsigned char>(b)));
        }
    }

    std::vector<Element> items(NodeId id) const {
        std::vector<Element> out;
        if (nodes_[id].kind != Node::Kind::concat) {
            append(id, out);
            return out;
        }
        for (const NodeId c : nodes_[id].children) append(c, out);
        return out;
    }

    RuleId rule_for(NodeId id) {
        const Node& n = nodes_[id];
        switch (n.kind) {
            case Node::Kind::empty:
            case Node::Kind::concat: return g_.sequence(items(id), "regex");
            case Node::Kind::chars: return inline_element(id) ? g_.sequence(items(id), "regex") : class_rule(n.ranges);
            case Node::Kind::alt: {
                const auto nullable = [&](NodeId c) { return nodes_[c].nullable; };
                TPS_CHECK(std::count_if(n.children.begin(), n.children.end(), nullable) <= 1,
                          "regex: node {} has several branches that match \"\"", id);
                const RuleId rule = g_.add_rule("regex|");
                for (const NodeId c : n.children) g_.add_alternative(rule, items(c));
                return rule;
            }
            case Node::Kind::repeat: {
                const RuleId child = rules_[n.children[0]];
                return n.min == 0 && n.max == 1 ? g_.optional(child) : g_.repeat(child, n.min, n.max);
            }
        }
        return 0;
    }

    // One rule per distinct non-ASCII class: `.` alone spells out several byte-range sequences.
    RuleId class_rule(const std::vector<CodePointRange>& ranges) {
        std::vector<std::pair<char32_t, char32_t>> key;
        for (const CodePointRange& r : ranges) key.emplace_back(r.first, r.last);
        if (const auto it = classes_.find(key); it != classes_.end()) return it->second;
        const RuleId rule = g_.code_points(ranges, "regex[]");
        classes_.emplace(std::move(key), rule);
        return rule;
    }

    GrammarBuilder& g_;
    const std::vector<Node>& nodes_;
    std::vector<RuleId> rules_;
    std::map<std::vector<std::pair<char32_t, char32_t>>, RuleId> classes_;
};

}  // namespace

RuleId add_regex(GrammarBuilder& g, std::string_view pattern) {
    Parser parser(pattern);
    const NodeId root = parser.parse();
    return Emitter(g, parser.tree().nodes()).emit(root);
}

}  // namespace tps::structured
