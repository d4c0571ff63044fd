// Grammars for structured output: a context-free grammar over bytes, and the matcher that follows
// generated text through it one byte at a time (the method of llama.cpp's GBNF grammars: a set of
// parse stacks). JSON schemas, regular expressions and choice lists are compiled into one
// (json_schema.h, regex_grammar.h); token_constraint.h turns a matcher's state into the tokens
// that may come next.
//
// A grammar is rules; a rule is alternatives; an alternative is a sequence of elements, each one
// byte out of a set or a reference to a rule. Bytes, not characters: a token may end inside a
// UTF-8 character, and code_points() spells a character range as its UTF-8 byte sequences, so the
// text a grammar admits is valid UTF-8 wherever its character ranges are. A rule may refer to
// itself (JSON nests), but not before it has matched a byte (left recursion): compile() refuses
// that, since the matcher would never stop expanding it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::structured {

struct ByteSet {
    std::array<uint64_t, 4> bits{};

    static ByteSet of(unsigned char c) {
        ByteSet s;
        s.add(c);
        return s;
    }
    static ByteSet range(unsigned char lo, unsigned char hi) {
        ByteSet s;
        s.add_range(lo, hi);
        return s;
    }
    void add(unsigned char c) { bits[c >> 6] |= uint64_t{1} << (c & 63); }
    void add_range(unsigned char lo, unsigned char hi) {
        for (unsigned c = lo; c <= hi; ++c) add(static_cast<unsigned char>(c));
    }
    bool has(unsigned char c) const { return (bits[c >> 6] >> (c & 63)) & 1; }
    bool empty() const { return (bits[0] | bits[1] | bits[2] | bits[3]) == 0; }
    ByteSet& operator|=(const ByteSet& o) {
        for (int i = 0; i < 4; ++i) bits[static_cast<size_t>(i)] |= o.bits[static_cast<size_t>(i)];
        return *this;
    }
    bool operator==(const ByteSet&) const = default;
};

// A range of Unicode code points, both ends included.
struct CodePointRange {
    char32_t first = 0;
    char32_t last = 0;
};
inline constexpr char32_t kMaxCodePoint = 0x10FFFF;

using RuleId = uint32_t;

struct Element {
    enum class Kind : uint8_t { bytes, rule };
    Kind kind = Kind::bytes;
    RuleId rule = 0;  // Kind::rule
    ByteSet set;      // Kind::bytes
};

class CompiledGrammar;

// Builds a grammar. Rules are made first and given alternatives after, so that a rule can refer
// to itself or to one made later. The helpers below each return a new rule.
class GrammarBuilder {
public:
    // A rule with no alternatives yet (it matches nothing until it has one). `name` is for errors.
    RuleId add_rule(std::string name);
    void add_alternative(RuleId rule, std::vector<Element> sequence);  // empty: matches ""

    static Element bytes(ByteSet set) { return Element{Element::Kind::bytes, 0, set}; }
    static Element byte(unsigned char c) { return bytes(ByteSet::of(c)); }
    static Element ref(RuleId rule) { return Element{Element::Kind::rule, rule, {}}; }

    RuleId literal(std::string_view text, std::string name = "literal");       // exactly these bytes
    RuleId sequence(std::vector<Element> elements, std::string name = "seq");  // one alternative
    RuleId choice(std::span<const RuleId> rules, std::string name = "choice");
    RuleId optional(RuleId rule);
    // `rule` from min to max times (max < 0: no limit). UsageError when max is above kMaxRepeat
    // or below min. `rule` must not match "": its repetition would be left-recursive, which
    // compile() refuses (regex_grammar.cpp rewrites such repetitions first).
    RuleId repeat(RuleId rule, int64_t min, int64_t max);
    RuleId star(RuleId rule) { return repeat(rule, 0, -1); }
    RuleId plus(RuleId rule) { return repeat(rule, 1, -1); }
    // One character out of the ranges (UTF-8; surrogates U+D800..U+DFFF never match). UsageError
    // for a range past U+10FFFF or the wrong way round.
    RuleId code_points(std::span<const CodePointRange> ranges, std::string name = "chars");
    // Any one character (valid UTF-8) except those in `excluded`.
    RuleId code_points_except(std::span<const CodePointRange> excluded, std::string name = "chars");

    size_t rule_count() const { return rules_.size(); }
    // Every byte the rules first..last-1 may match directly (not through rules outside them).
    ByteSet bytes_used(RuleId first, RuleId last) const;
    // The grammar whose text is what `root` matches. Alternatives that can never end (they need a
    // rule that derives no finite text, such as a property that must hold itself) are dropped, so
    // every text the matcher allows can still be completed. UsageError naming the rule for a rule
    // without alternatives, a reference to no rule, left recursion, or a root with no finite text.
    std::shared_ptr<const CompiledGrammar> compile(RuleId root) const;

    static constexpr int64_t kMaxRepeat = 10000;
    // Rules and elements together; UsageError as soon as a grammar being built passes it (a
    // request's schema or pattern cannot make the server build a huge grammar first).
    static constexpr size_t kMaxElements = 1'000'000;

private:
    void grow(size_t elements);  // counts toward kMaxElements
    struct Rule {
        std::string name;
        std::vector<std::vector<Element>> alternatives;
    };
    std::vector<Rule> rules_;
    size_t size_ = 0;  // rules + elements so far
};

// The complement of `ranges` within 0..kMaxCodePoint, surrogates left out (sorted, merged).
std::vector<CodePointRange> complement(std::span<const CodePointRange> ranges);

// A compiled grammar: immutable, shared by every matcher of it (and by several threads).
class CompiledGrammar {
public:
    // A position: an element of an alternative, by index into the flat element list.
    struct Elem {
        Element::Kind kind = Element::Kind::bytes;
        uint32_t value = 0;  // a rule, or an index into sets_; kEnd (kind rule) ends an alternative
        bool end() const { return kind == Element::Kind::rule && value == kEnd; }
    };
    static constexpr uint32_t kEnd = UINT32_MAX;  // an alternative's end

    // Where each alternative of a rule starts (an index into elements(); kEnd-terminated lists).
    std::span<const uint32_t> alternatives(RuleId rule) const {
        return {alt_starts_.data() + rule_first_[rule], rule_first_[rule + 1] - rule_first_[rule]};
    }
    const Elem& element(uint32_t pos) const { return elems_[pos]; }
    const ByteSet& set(uint32_t index) const { return sets_[index]; }
    RuleId root() const { return root_; }
    const std::string& rule_name(RuleId rule) const { return names_[rule]; }
    size_t size() const { return elems_.size(); }

private:
    friend class GrammarBuilder;
    std::vector<Elem> elems_;               // alternatives one after another, each ended by an end()
    std::vector<ByteSet> sets_;
    std::vector<uint32_t> alt_starts_;      // per rule, its alternatives' first positions
    std::vector<uint32_t> rule_first_;      // rule r's alternatives: alt_starts_[rule_first_[r] ..)
    std::vector<std::string> names_;
    RuleId root_ = 0;
};

// Where the text so far may stand in a grammar: every parse stack still alive. Each stack is the
// positions still to be matched, the top (the next byte's element, always a byte set) last. An
// empty stack means the text so far is a whole sentence of the grammar. Value type; cheap to copy
// for small grammars.
class GrammarState {
public:
    // The state before any text.
    explicit GrammarState(std::shared_ptr<const CompiledGrammar> grammar);

    // The state after one more byte; dead() when no stack takes it.
    GrammarState advanced(unsigned char byte) const;
    // Advances in place through `text`; false (and the state left dead) at the first byte refused.
    bool advance(std::string_view text);
    bool dead() const { return stacks_.empty(); }
    bool complete() const;       // the text so far is a whole sentence
    bool can_continue() const;   // some byte may follow
    // The bytes any stack takes next.
    ByteSet next_bytes() const;
    // A key that equals another state's exactly when both stand at the same stacks.
    const std::vector<uint32_t>& key() const { return flat_; }
    const std::shared_ptr<const CompiledGrammar>& grammar() const { return grammar_; }

    // A cap on live stacks, and on the stacks one step may expand to before duplicates merge
    // (4 x): an ambiguous grammar past it is an error (UsageError), not a stall.
    static constexpr size_t kMaxStacks = 4096;

private:
    GrammarState() = default;
    void set_stacks(std::vector<std::vector<uint32_t>> stacks);
    std::shared_ptr<const CompiledGrammar> grammar_;
    std::vector<std::vector<uint32_t>> stacks_;  // sorted, unique
    std::vector<uint32_t> flat_;                 // the stacks, each followed by kEnd
};

}  // namespace tps::structured
