// Free text watching for strings (watched_text.h): an Aho-Corasick automaton over the strings'
// code points, one grammar rule per state that is inside no string yet.
#include "tpserve/engine/structured/watched_text.h"

#include "../tokenizer/utf8.h"
#include "tpserve/common/check.h"

#include <algorithm>
#include <deque>
#include <map>
#include <vector>

namespace tps::structured {
namespace {

constexpr int kNone = -1;

struct Node {
    std::map<char32_t, int> edges;  // the trie's
    int fail = 0;                   // the longest proper suffix that is a trie node
    int match = kNone;              // the watched string that ends here (the one that wins)
};

// Which of two strings ending at the same place counts (watched_text.h).
int winner(std::span<const WatchedString> watched, int a, int b) {
    if (a == kNone) return b;
    if (b == kNone) return a;
    const WatchedString& x = watched[static_cast<size_t>(a)];
    const WatchedString& y = watched[static_cast<size_t>(b)];
    if (x.kind != y.kind) return x.kind < y.kind ? a : b;  // excluded, then end, then trigger
    return y.text.size() > x.text.size() ? b : a;
}

// The elements that match exactly the code points `chars` (sorted).
class CharSets {
public:
    explicit CharSets(GrammarBuilder& g) : g_(g) {}

    void append(const std::vector<char32_t>& chars, std::vector<Element>& out) {
        if (chars.size() == 1) {
            std::string bytes;
            tok::utf8_append(bytes, chars[0]);
            for (const char b : bytes) out.push_back(GrammarBuilder::byte(static_cast<unsigned char>(b)));
            return;
        }
        if (chars.back() < 0x80) {
            ByteSet set;
            for (const char32_t c : chars) set.add(static_cast<unsigned char>(c));
            out.push_back(GrammarBuilder::bytes(set));
            return;
        }
        auto [it, fresh] = sets_.try_emplace(chars, 0);
        if (fresh) it->second = g_.code_points(ranges(chars), "text");
        out.push_back(GrammarBuilder::ref(it->second));
    }

    // Any code point but `chars` (sorted).
    Element all_but(const std::vector<char32_t>& chars) {
        auto [it, fresh] = others_.try_emplace(chars, 0);
        if (fresh) it->second = g_.code_points_except(ranges(chars), "text");
        return GrammarBuilder::ref(it->second);
    }

private:
    static std::vector<CodePointRange> ranges(const std::vector<char32_t>& chars) {
        std::vector<CodePointRange> out;
        for (const char32_t c : chars) {
            if (!out.empty() && out.back().last + 1 == c) out.back().last = c;
            else out.push_back({c, c});
        }
        return out;
    }

    GrammarBuilder& g_;
    std::map<std::vector<char32_t>, RuleId> sets_, others_;
};

}  // namespace

RuleId add_watched_text(GrammarBuilder& g, std::span<const WatchedString> watched, const WatchedTextOptions& options) {
    // the trie of the strings, with its failure links (breadth first)
    std::vector<Node> nodes(1);
    std::vector<char32_t> alphabet;
    for (size_t i = 0; i < watched.size(); ++i) {
        const std::string& text = watched[i].text;
        TPS_CHECK_AS(UsageError, !text.empty(), "a watched string is empty");
        TPS_CHECK_AS(UsageError, tok::utf8_is_valid(text), "the string '{}' is not valid UTF-8", text);
        int at = 0;
        for (const char32_t c : tok::utf8_to_u32(text)) {
            alphabet.push_back(c);
            auto it = nodes[static_cast<size_t>(at)].edges.find(c);
            if (it == nodes[static_cast<size_t>(at)].edges.end()) {
                nodes.emplace_back();
                it = nodes[static_cast<size_t>(at)].edges.emplace(c, static_cast<int>(nodes.size()) - 1).first;
            }
            at = it->second;
        }
        Node& end = nodes[static_cast<size_t>(at)];
        end.match = winner(watched, end.match, static_cast<int>(i));
    }
    std::sort(alphabet.begin(), alphabet.end());
    alphabet.erase(std::unique(alphabet.begin(), alphabet.end()), alphabet.end());
    // step[q][k]: the state after alphabet[k] from q (any other character leads to the root)
    std::vector<std::vector<int>> step(nodes.size(), std::vector<int>(alphabet.size(), 0));
    std::deque<int> order = {0};
    while (!order.empty()) {
        const int q = order.front();
        order.pop_front();
        Node& n = nodes[static_cast<size_t>(q)];
        if (q != 0) n.match = winner(watched, n.match, nodes[static_cast<size_t>(n.fail)].match);
        for (size_t k = 0; k < alphabet.size(); ++k) {
            const auto edge = n.edges.find(alphabet[k]);
            const int fallback = q == 0 ? 0 : step[static_cast<size_t>(n.fail)][k];
            if (edge == n.edges.end()) {
                step[static_cast<size_t>(q)][k] = fallback;
                continue;
            }
            step[static_cast<size_t>(q)][k] = edge->second;
            nodes[static_cast<size_t>(edge->second)].fail = fallback;
            order.push_back(edge->second);
        }
    }

    // a rule per state inside no string yet (the root is one: no string is empty)
    std::vector<RuleId> rule_of(nodes.size(), 0);
    for (size_t q = 0; q < nodes.size(); ++q) {
        if (nodes[q].match == kNone) rule_of[q] = g.add_rule(q == 0 ? "text" : "text (watching)");
    }
    CharSets sets(g);
    for (size_t q = 0; q < nodes.size(); ++q) {
        if (nodes[q].match != kNone) continue;
        if (options.may_stop) g.add_alternative(rule_of[q], {});
        std::map<int, std::vector<char32_t>> free_to;  // a free state other than the root -> characters to it
        std::vector<char32_t> not_to_root;
        for (size_t k = 0; k < alphabet.size(); ++k) {
            const char32_t c = alphabet[k];
            const int t = step[q][k];
            const int match = nodes[static_cast<size_t>(t)].match;
            if (t != 0) not_to_root.push_back(c);
            if (match == kNone) {
                if (t != 0) free_to[t].push_back(c);
                continue;
            }
            const WatchedString& w = watched[static_cast<size_t>(match)];
            if (w.kind == WatchedString::Kind::excluded) continue;
            std::vector<Element> alt;
            sets.append({c}, alt);
            if (w.kind == WatchedString::Kind::trigger) {
                alt.push_back(GrammarBuilder::ref(w.then));
                if (!options.once) alt.push_back(GrammarBuilder::ref(rule_of[0]));
                else if (options.after_once) alt.push_back(GrammarBuilder::ref(*options.after_once));
            }
            g.add_alternative(rule_of[q], std::move(alt));
        }
        for (const auto& [t, chars] : free_to) {
            std::vector<Element> alt;
            sets.append(chars, alt);
            alt.push_back(GrammarBuilder::ref(rule_of[static_cast<size_t>(t)]));
            g.add_alternative(rule_of[q], std::move(alt));
        }
        g.add_alternative(rule_of[q], {sets.all_but(not_to_root), GrammarBuilder::ref(rule_of[0])});
    }
    return rule_of[0];
}

}  // namespace tps::structured
