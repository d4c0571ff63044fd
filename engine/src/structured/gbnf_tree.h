// The parsed form of a GBNF text (gbnf_grammar.cpp): one tree of nodes per rule, with what each
// node can match ("" and/or more), and the rewriting that keeps repetitions of something nullable
// from being left-recursive. Internal to gbnf_grammar.cpp; split out to keep one concept per file.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tps::structured::gbnf {

using NodeId = uint32_t;
constexpr NodeId kNone = UINT32_MAX;

struct Node {
    // ref_nonempty: what rule `rule` matches less ""
    enum class Kind : uint8_t { empty, bytes, chars, ref, ref_nonempty, concat, alt, repeat };
    Kind kind = Kind::empty;
    uint32_t owner = 0;                  // the GBNF rule it was written in (names helper rules)
    uint32_t rule = 0;                   // ref, ref_nonempty
    std::string text;                    // bytes: not empty
    std::vector<CodePointRange> ranges;  // chars: sorted, merged, not empty
    std::vector<NodeId> children;        // concat, alt (two or more); repeat (one)
    int64_t min = 0, max = 0;            // repeat; max < 0: no limit
    bool nullable = false;               // may match ""
    bool nonempty = false;               // may match something other than "" (if it ends)
};

inline Node make(Node::Kind kind, uint32_t owner) {
    Node n;
    n.kind = kind;
    n.owner = owner;
    return n;
}
inline Node make_repeat(NodeId child, int64_t min, int64_t max, uint32_t owner) {
    Node n = make(Node::Kind::repeat, owner);
    n.children = {child};
    n.min = min;
    n.max = max;
    return n;
}

struct RuleDef {
    std::string name;
    size_t at = 0;  // offset of the name
    NodeId root = kNone;
};

// The rules' trees. Nullability is known once finish() has run; nodes made after that (by strip
// and repeat) know theirs when made.
class Tree {
public:
    std::vector<Node>& nodes() { return nodes_; }
    const Node& at(NodeId n) const { return nodes_[n]; }

    NodeId add(Node n) {
        update(n);
        nodes_.push_back(std::move(n));
        return static_cast<NodeId>(nodes_.size() - 1);
    }
    NodeId list(Node::Kind kind, std::vector<NodeId> items, uint32_t owner) {
        if (items.size() == 1) return items[0];
        if (items.empty()) return kind == Node::Kind::alt ? kNone : add(make(Node::Kind::empty, owner));
        Node n = make(kind, owner);
        n.children = std::move(items);
        return add(std::move(n));
    }
    // child{min,max}, rewritten so that the repeated part never matches "" (when nullability is known).
    NodeId repeat(NodeId child, int64_t min, int64_t max) {
        const uint32_t owner = nodes_[child].owner;
        if (max == 0) return add(make(Node::Kind::empty, owner));
        if (known_ && nodes_[child].nullable) {
            // x{n,m} with x nullable is (x less ""){0,m}; (x1 x2 ...)* with every xi nullable is
            // (x1|x2|...)*, which the matcher reads in far fewer ways
            if (max < 0 && nodes_[child].kind == Node::Kind::concat) {
                child = list(Node::Kind::alt, nodes_[child].children, owner);
            }
            child = strip(child);
            if (child == kNone) return add(make(Node::Kind::empty, owner));
            min = 0;
        }
        if (min == 1 && max == 1) return child;
        return add(make_repeat(child, min, max, owner));
    }

    // Nullability of every node and rule (a fixed point: rules refer to each other in any order),
    // then the parsed repetitions rewritten as repeat() would have made them.
    void finish(const std::vector<RuleDef>& rules) {
        const size_t parsed = nodes_.size();
        for (bool changed = true; changed;) {
            for (size_t n = 0; n < parsed; ++n) update(nodes_[n]);
            std::vector<std::pair<bool, bool>> next;
            for (const RuleDef& r : rules) next.emplace_back(nodes_[r.root].nullable, nodes_[r.root].nonempty);
            changed = next != rule_state_;
            rule_state_ = std::move(next);
        }
        known_ = true;
        for (size_t n = 0; n < parsed; ++n) {
            const Node node = nodes_[n];
            if (node.kind != Node::Kind::repeat) continue;
            const bool rewrite = node.max == 0 || nodes_[node.children[0]].nullable || (node.min == 1 && node.max == 1);
            if (!rewrite) continue;
            Node copy = nodes_[repeat(node.children[0], node.min, node.max)];
            nodes_[n] = std::move(copy);
        }
    }

    // A node for what `n` matches less "" (kNone when that is nothing); made once per node.
    NodeId strip(NodeId n) {
        if (!nodes_[n].nullable) return n;
        if (!nodes_[n].nonempty) return kNone;
        if (const auto it = stripped_.find(n); it != stripped_.end()) return it->second;
        const NodeId s = strip_anew(n);
        stripped_.emplace(n, s);
        return s;
    }

private:
    void update(Node& n) const {
        const auto all = [&](auto pred) { return std::all_of(n.children.begin(), n.children.end(), pred); };
        const auto any = [&](auto pred) { return std::any_of(n.children.begin(), n.children.end(), pred); };
        const auto nul = [&](NodeId c) { return nodes_[c].nullable; };
        const auto ne = [&](NodeId c) { return nodes_[c].nonempty; };
        switch (n.kind) {
            case Node::Kind::empty: n.nullable = true, n.nonempty = false; return;
            case Node::Kind::bytes:
            case Node::Kind::chars:
            case Node::Kind::ref_nonempty: n.nullable = false, n.nonempty = true; return;
            case Node::Kind::ref: {
                const bool have = n.rule < rule_state_.size();
                n.nullable = have && rule_state_[n.rule].first;
                n.nonempty = have && rule_state_[n.rule].second;
                return;
            }
            case Node::Kind::concat: n.nullable = all(nul), n.nonempty = any(ne); return;
            case Node::Kind::alt: n.nullable = any(nul), n.nonempty = any(ne); return;
            case Node::Kind::repeat:
                n.nullable = n.min == 0 || n.max == 0 || nul(n.children[0]);
                n.nonempty = n.max != 0 && ne(n.children[0]);
                return;
        }
    }

    NodeId strip_anew(NodeId n) {
        const Node node = nodes_[n];  // copied: add() moves nodes_
        switch (node.kind) {
            case Node::Kind::empty:
            case Node::Kind::bytes:
            case Node::Kind::chars:
            case Node::Kind::ref_nonempty: return kNone;  // (never nullable and non-empty both)
            case Node::Kind::ref: {
                Node r = make(Node::Kind::ref_nonempty, node.owner);
                r.rule = node.rule;
                return add(std::move(r));
            }
            case Node::Kind::repeat: {  // nullable: min is 0, or the child is nullable
                NodeId c = node.children[0];
                if (nodes_[c].nullable) c = strip(c);
                return c == kNone ? kNone : repeat(c, 1, node.max);
            }
            case Node::Kind::alt: {
                std::vector<NodeId> branches;
                for (const NodeId c : node.children) {
                    if (const NodeId s = strip(c); s != kNone) branches.push_back(s);
                }
                return list(Node::Kind::alt, std::move(branches), node.owner);
            }
            case Node::Kind::concat: {
                // Every child is nullable. With T(i) = children i.. and S(i) = T(i) less "":
                // S(i) = strip(child i) T(i+1) | S(i+1), built from the right (linear in size).
                const auto& ch = node.children;
                NodeId tail = ch.back();
                NodeId stripped = strip(ch.back());
                for (size_t i = ch.size() - 1; i-- > 0;) {
                    std::vector<NodeId> branches;
                    if (const NodeId s = strip(ch[i]); s != kNone) {
                        branches.push_back(list(Node::Kind::concat, {s, tail}, node.owner));
                    }
                    if (stripped != kNone) branches.push_back(stripped);
                    stripped = list(Node::Kind::alt, std::move(branches), node.owner);
                    if (i > 0) tail = list(Node::Kind::concat, {ch[i], tail}, node.owner);
                }
                return stripped;
            }
        }
        return kNone;
    }

    std::vector<Node> nodes_;
    std::vector<std::pair<bool, bool>> rule_state_;  // per rule: nullable, nonempty
    bool known_ = false;
    std::map<NodeId, NodeId> stripped_;  // strip()'s answers
};

}  // namespace tps::structured::gbnf
