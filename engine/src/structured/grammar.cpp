#include "tpserve/engine/structured/grammar.h"

#include "tpserve/common/check.h"

#include <algorithm>
#include <map>
#include <unordered_set>

namespace tps::structured {

// --- building ---------------------------------------------------------------------------------

void GrammarBuilder::grow(size_t elements) {
    size_ += elements;
    TPS_CHECK_AS(UsageError, size_ <= kMaxElements, "the grammar is larger than the {} rules and elements supported",
                 kMaxElements);
}

RuleId GrammarBuilder::add_rule(std::string name) {
    grow(1);
    rules_.push_back(Rule{std::move(name), {}});
    return static_cast<RuleId>(rules_.size() - 1);
}

void GrammarBuilder::add_alternative(RuleId rule, std::vector<Element> sequence) {
    TPS_CHECK(rule < rules_.size(), "grammar: no rule {}", rule);
    grow(sequence.size() + 1);
    rules_[rule].alternatives.push_back(std::move(sequence));
}

RuleId GrammarBuilder::literal(std::string_view text, std::string name) {
    std::vector<Element> seq;
    seq.reserve(text.size());
    for (const char c : text) seq.push_back(byte(static_cast<unsigned char>(c)));
    return sequence(std::move(seq), std::move(name));
}

RuleId GrammarBuilder::sequence(std::vector<Element> elements, std::string name) {
    const RuleId r = add_rule(std::move(name));
    add_alternative(r, std::move(elements));
    return r;
}

RuleId GrammarBuilder::choice(std::span<const RuleId> rules, std::string name) {
    const RuleId r = add_rule(std::move(name));
    for (const RuleId a : rules) add_alternative(r, {ref(a)});
    return r;
}

RuleId GrammarBuilder::optional(RuleId rule) {
    const RuleId r = add_rule(rules_.at(rule).name + "?");
    add_alternative(r, {ref(rule)});
    add_alternative(r, {});
    return r;
}

RuleId GrammarBuilder::repeat(RuleId rule, int64_t min, int64_t max) {
    TPS_CHECK_AS(UsageError, min >= 0 && min <= kMaxRepeat, "a repetition of at least {} is more than the {} supported", min,
                 kMaxRepeat);
    TPS_CHECK_AS(UsageError, max < 0 || max <= kMaxRepeat, "a repetition of up to {} is more than the {} supported", max,
                 kMaxRepeat);
    TPS_CHECK_AS(UsageError, max < 0 || max >= min, "a repetition of {} to {} times is empty", min, max);
    const std::string name = rules_.at(rule).name;  // a copy: add_rule moves the rules
    std::vector<Element> seq(static_cast<size_t>(min), ref(rule));
    if (max < 0) {
        // tail ::= rule tail | "" (the tail call keeps parse stacks flat)
        const RuleId tail = add_rule(name + "*");
        add_alternative(tail, {ref(rule), ref(tail)});
        add_alternative(tail, {});
        seq.push_back(ref(tail));
    } else if (max > min) {
        // up_to(k) ::= rule up_to(k-1) | "", up_to(1) ::= rule | ""
        RuleId up_to = add_rule(name + "{0,1}");
        add_alternative(up_to, {ref(rule)});
        add_alternative(up_to, {});
        for (int64_t k = 2; k <= max - min; ++k) {
            const RuleId next = add_rule(name + "{0," + std::to_string(k) + "}");
            add_alternative(next, {ref(rule), ref(up_to)});
            add_alternative(next, {});
            up_to = next;
        }
        seq.push_back(ref(up_to));
    }
    return sequence(std::move(seq), name + "{}");
}

namespace {

void encode_utf8(char32_t c, unsigned char* out, int n) {
    if (n == 1) {
        out[0] = static_cast<unsigned char>(c);
        return;
    }
    static constexpr unsigned char kLead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (int i = n - 1; i > 0; --i) {
        out[i] = static_cast<unsigned char>(0x80 | (c & 0x3F));
        c >>= 6;
    }
    out[0] = static_cast<unsigned char>(kLead[n] | c);
}

int utf8_length(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

// Splits [a, b] (one encoded length) until each piece's UTF-8 forms are a product of byte ranges
// (the method of Rust regex-syntax's Utf8Sequences), and adds each as an alternative of `rule`.
void add_utf8_range(GrammarBuilder& g, RuleId rule, char32_t a, char32_t b) {
    const int n = utf8_length(a);
    for (int i = 1; i < n; ++i) {
        const char32_t m = (char32_t{1} << (6 * i)) - 1;
        if ((a & ~m) != (b & ~m)) {
            if ((a & m) != 0) {
                add_utf8_range(g, rule, a, a | m);
                add_utf8_range(g, rule, (a | m) + 1, b);
                return;
            }
            if ((b & m) != m) {
                add_utf8_range(g, rule, a, (b & ~m) - 1);
                add_utf8_range(g, rule, b & ~m, b);
                return;
            }
        }
    }
    unsigned char ea[4], eb[4];
    encode_utf8(a, ea, n);
    encode_utf8(b, eb, n);
    std::vector<Element> seq;
    for (int i = 0; i < n; ++i) seq.push_back(GrammarBuilder::bytes(ByteSet::range(ea[i], eb[i])));
    g.add_alternative(rule, std::move(seq));
}

std::vector<CodePointRange> normalized(std::span<const CodePointRange> ranges) {
    std::vector<CodePointRange> v(ranges.begin(), ranges.end());
    for (const auto& r : v) {
        TPS_CHECK_AS(UsageError, r.first <= r.last, "the character range U+{:04X}-U+{:04X} is the wrong way round",
                     static_cast<uint32_t>(r.first), static_cast<uint32_t>(r.last));
        TPS_CHECK_AS(UsageError, r.last <= kMaxCodePoint, "U+{:04X} is past the last Unicode code point",
                     static_cast<uint32_t>(r.last));
    }
    std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<CodePointRange> out;
    for (const auto& r : v) {
        if (!out.empty() && r.first <= out.back().last + 1) {
            out.back().last = std::max(out.back().last, r.last);
        } else {
            out.push_back(r);
        }
    }
    return out;
}

}  // namespace

std::vector<CodePointRange> complement(std::span<const CodePointRange> ranges) {
    std::vector<CodePointRange> in = normalized(ranges);
    in.push_back({0xD800, 0xDFFF});  // surrogates are never characters
    in = normalized(in);
    std::vector<CodePointRange> out;
    char32_t next = 0;
    for (const auto& r : in) {
        if (r.first > next) out.push_back({next, r.first - 1});
        next = r.last + 1;
    }
    if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
    return out;
}

RuleId GrammarBuilder::code_points(std::span<const CodePointRange> ranges, std::string name) {
    const RuleId rule = add_rule(std::move(name));
    // the ranges without surrogates: the complement of (the complement plus surrogates)
    const std::vector<CodePointRange> gaps = complement(ranges);
    const std::vector<CodePointRange> chars = complement(gaps);
    static constexpr char32_t kBounds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodePoint};
    for (const auto& r : chars) {
        char32_t a = r.first;
        for (const char32_t bound : kBounds) {
            if (a > r.last) break;
            if (a > bound) continue;
            const char32_t b = std::min(r.last, bound);
            add_utf8_range(*this, rule, a, b);
            a = b + 1;
        }
    }
    return rule;  // no ranges: no alternative, which compile() reports
}

RuleId GrammarBuilder::code_points_except(std::span<const CodePointRange> excluded, std::string name) {
    const std::vector<CodePointRange> allowed = complement(excluded);
    return code_points(allowed, std::move(name));
}

ByteSet GrammarBuilder::bytes_used(RuleId first, RuleId last) const {
    ByteSet out;
    for (RuleId r = first; r < last && r < rules_.size(); ++r) {
        for (const auto& alt : rules_[r].alternatives) {
            for (const Element& e : alt) {
                if (e.kind == Element::Kind::bytes) out |= e.set;
            }
        }
    }
    return out;
}

std::shared_ptr<const CompiledGrammar> GrammarBuilder::compile(RuleId root) const {
    TPS_CHECK_AS(UsageError, root < rules_.size(), "grammar: the root rule {} does not exist", root);
    const size_t n = rules_.size();
    size_t total = 0;
    for (const Rule& r : rules_) {
        TPS_CHECK_AS(UsageError, !r.alternatives.empty(), "grammar: the rule '{}' matches nothing", r.name);
        for (const auto& alt : r.alternatives) {
            total += alt.size() + 1;
            for (const Element& e : alt) {
                TPS_CHECK_AS(UsageError, e.kind == Element::Kind::bytes || e.rule < n, "grammar: the rule '{}' refers to no rule",
                             r.name);
                TPS_CHECK_AS(UsageError, e.kind == Element::Kind::rule || !e.set.empty(),
                             "grammar: the rule '{}' has an empty byte set", r.name);
            }
        }
    }

    // which rules can match "" (to a fixed point)
    std::vector<char> nullable(n, 0);
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < n; ++r) {
            if (nullable[r]) continue;
            for (const auto& alt : rules_[r].alternatives) {
                const bool all = std::all_of(alt.begin(), alt.end(), [&](const Element& e) {
                    return e.kind == Element::Kind::rule && nullable[e.rule];
                });
                if (all) {
                    nullable[r] = 1;
                    changed = true;
                    break;
                }
            }
        }
    }
    // left recursion: a cycle among "r may start with s" edges
    std::vector<std::vector<RuleId>> starts(n);
    for (size_t r = 0; r < n; ++r) {
        for (const auto& alt : rules_[r].alternatives) {
            for (const Element& e : alt) {
                if (e.kind == Element::Kind::bytes) break;
                starts[r].push_back(e.rule);
                if (!nullable[e.rule]) break;
            }
        }
    }
    std::vector<uint8_t> mark(n, 0);  // 0 unvisited, 1 on the path, 2 done
    for (size_t r0 = 0; r0 < n; ++r0) {
        if (mark[r0]) continue;
        std::vector<std::pair<RuleId, size_t>> path{{static_cast<RuleId>(r0), 0}};
        mark[r0] = 1;
        while (!path.empty()) {
            auto& [r, i] = path.back();
            if (i == starts[r].size()) {
                mark[r] = 2;
                path.pop_back();
                continue;
            }
            const RuleId s = starts[r][i++];
            TPS_CHECK_AS(UsageError, mark[s] != 1, "grammar: the rule '{}' is left-recursive", rules_[s].name);
            if (mark[s] == 0) {
                mark[s] = 1;
                path.emplace_back(s, 0);
            }
        }
    }

    // which rules derive some finite text (to a fixed point); alternatives that need a rule that
    // does not are dropped: the matcher could enter them and never reach an end
    std::vector<char> finite(n, 0);
    auto ends = [&](const std::vector<Element>& alt) {
        return std::all_of(alt.begin(), alt.end(), [&](const Element& e) { return e.kind == Element::Kind::bytes || finite[e.rule]; });
    };
    for (bool changed = true; changed;) {
        changed = false;
        for (size_t r = 0; r < n; ++r) {
            if (finite[r]) continue;
            if (std::any_of(rules_[r].alternatives.begin(), rules_[r].alternatives.end(), ends)) {
                finite[r] = 1;
                changed = true;
            }
        }
    }
    TPS_CHECK_AS(UsageError, finite[root], "grammar: '{}' admits no finite text (it always needs more of itself)",
                 rules_[root].name);

    auto g = std::make_shared<CompiledGrammar>();
    g->root_ = root;
    g->elems_.reserve(total);
    g->rule_first_.push_back(0);
    std::map<std::array<uint64_t, 4>, uint32_t> set_index;
    for (const Rule& r : rules_) {
        for (const auto& alt : r.alternatives) {
            if (!ends(alt)) continue;
            g->alt_starts_.push_back(static_cast<uint32_t>(g->elems_.size()));
            for (const Element& e : alt) {
                if (e.kind == Element::Kind::rule) {
                    g->elems_.push_back({Element::Kind::rule, e.rule});
                    continue;
                }
                const auto [it, added] = set_index.emplace(e.set.bits, static_cast<uint32_t>(g->sets_.size()));
                if (added) g->sets_.push_back(e.set);
                g->elems_.push_back({Element::Kind::bytes, it->second});
            }
            g->elems_.push_back({Element::Kind::rule, CompiledGrammar::kEnd});
        }
        g->rule_first_.push_back(static_cast<uint32_t>(g->alt_starts_.size()));
        g->names_.push_back(r.name);
    }
    return g;
}

// --- matching ---------------------------------------------------------------------------------

namespace {

struct StackHash {
    size_t operator()(const std::vector<uint32_t>& v) const noexcept {
        uint64_t h = 1469598103934665603ull;
        for (const uint32_t x : v) h = (h ^ x) * 1099511628211ull;
        return static_cast<size_t>(h);
    }
};
// The stacks one step has expanded already: the result of expanding a stack depends on the stack
// alone, so one met again (many ways to skip optional parts lead to it) is not expanded twice.
using Seen = std::unordered_set<std::vector<uint32_t>, StackHash>;

// Expands `stack` until its top is a byte set (or it is empty) and appends each result to `out`.
// Past 4 x kMaxStacks results the grammar is refused as too ambiguous.
void expand(const CompiledGrammar& g, std::vector<uint32_t>& stack, std::vector<std::vector<uint32_t>>& out, Seen& seen) {
    if (stack.empty() || g.element(stack.back()).kind == Element::Kind::bytes) {
        TPS_CHECK_AS(UsageError, out.size() < 4 * GrammarState::kMaxStacks,
                     "the grammar is too ambiguous: more than {} ways to read the text so far", 4 * GrammarState::kMaxStacks);
        out.push_back(stack);  // (equal results merge in set_stacks)
        return;
    }
    if (!seen.insert(stack).second) return;
    const uint32_t pos = stack.back();
    const RuleId rule = g.element(pos).value;
    stack.pop_back();
    if (!g.element(pos + 1).end()) stack.push_back(pos + 1);
    for (const uint32_t start : g.alternatives(rule)) {
        if (g.element(start).end()) {
            expand(g, stack, out, seen);
        } else {
            stack.push_back(start);
            expand(g, stack, out, seen);
            stack.pop_back();
        }
    }
    if (!g.element(pos + 1).end()) stack.pop_back();
    stack.push_back(pos);
}

}  // namespace

GrammarState::GrammarState(std::shared_ptr<const CompiledGrammar> grammar) : grammar_(std::move(grammar)) {
    TPS_CHECK(grammar_ != nullptr, "a grammar state needs a grammar");
    std::vector<std::vector<uint32_t>> out;
    Seen seen;
    for (const uint32_t start : grammar_->alternatives(grammar_->root())) {
        std::vector<uint32_t> stack;
        if (!grammar_->element(start).end()) stack.push_back(start);
        expand(*grammar_, stack, out, seen);
    }
    set_stacks(std::move(out));
}

void GrammarState::set_stacks(std::vector<std::vector<uint32_t>> stacks) {
    std::sort(stacks.begin(), stacks.end());
    stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
    TPS_CHECK_AS(UsageError, stacks.size() <= kMaxStacks,
                 "the grammar is too ambiguous: {} ways to read the text so far, more than the {} supported", stacks.size(),
                 kMaxStacks);
    stacks_ = std::move(stacks);
    flat_.clear();
    for (const auto& s : stacks_) {
        flat_.insert(flat_.end(), s.begin(), s.end());
        flat_.push_back(CompiledGrammar::kEnd);
    }
}

GrammarState GrammarState::advanced(unsigned char byte) const {
    GrammarState next;
    next.grammar_ = grammar_;
    std::vector<std::vector<uint32_t>> out;
    Seen seen;
    const CompiledGrammar& g = *grammar_;
    for (const auto& stack : stacks_) {
        if (stack.empty()) continue;
        const uint32_t top = stack.back();
        if (!g.set(g.element(top).value).has(byte)) continue;
        std::vector<uint32_t> s(stack.begin(), stack.end() - 1);
        if (!g.element(top + 1).end()) s.push_back(top + 1);
        expand(g, s, out, seen);
    }
    next.set_stacks(std::move(out));
    return next;
}

bool GrammarState::advance(std::string_view text) {
    for (const char c : text) {
        *this = advanced(static_cast<unsigned char>(c));
        if (dead()) return false;
    }
    return true;
}

bool GrammarState::complete() const {
    return std::any_of(stacks_.begin(), stacks_.end(), [](const auto& s) { return s.empty(); });
}

bool GrammarState::can_continue() const {
    return std::any_of(stacks_.begin(), stacks_.end(), [](const auto& s) { return !s.empty(); });
}

ByteSet GrammarState::next_bytes() const {
    ByteSet out;
    for (const auto& s : stacks_) {
        if (!s.empty()) out |= grammar_->set(grammar_->element(s.back()).value);
    }
    return out;
}

}  // namespace tps::structured
