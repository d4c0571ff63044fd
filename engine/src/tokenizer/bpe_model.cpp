// BPE after tokenizers' models/bpe (Word::merge_all): a word starts as one symbol per character
// (or per byte token when byte_fallback finds no character token); a min-heap on (merge rank,
// position) merges the best adjacent pair until none is left, skipping heap entries made stale by
// earlier merges. Cost is O(n log n) in the word's length, so even a long unsplit text is fast.
#include "models.h"

#include "tpserve/common/check.h"
#include "utf8.h"

#include <fmt/format.h>

#include <array>
#include <queue>
#include <unordered_map>

namespace tps::tok {

void Vocab::add(std::string token, int32_t id, std::string_view origin) {
    TPS_CHECK_AS(InputError, id >= 0, "{}: token '{}' has a negative id {}", origin, token, id);
    const auto at = static_cast<size_t>(id);
    if (at >= tokens_.size()) {
        tokens_.resize(at + 1);
        present_.resize(at + 1, false);
    }
    TPS_CHECK_AS(InputError, !present_[at], "{}: id {} is given to both '{}' and '{}'", origin, id, tokens_[at], token);
    const auto [it, inserted] = ids_.emplace(token, id);
    TPS_CHECK_AS(InputError, inserted, "{}: token '{}' appears twice (ids {} and {})", origin, token, it->second, id);
    tokens_[at] = std::move(token);
    present_[at] = true;
}

namespace {

struct MergeTarget {
    int32_t rank;
    int32_t new_id;
};

uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class Bpe final : public Model {
public:
    Bpe(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
        std::string_view origin)
        : options_(std::move(options)), origin_(origin) {
        vocab_ = std::move(vocab);
        merges_.reserve(merges.size());
        const size_t prefix_len = options_.continuing_subword_prefix.size();
        for (size_t rank = 0; rank < merges.size(); ++rank) {
            const auto& [a, b] = merges[rank];
            const auto known = [&](const std::string& t) {
                const auto id = vocab_.find(t);
                TPS_CHECK_AS(InputError, id.has_value(),
                             "{}: merges entry {} ('{} {}') names '{}', which is not in the vocabulary", origin_,
                             rank, a, b, t);
                return *id;
            };
            const int32_t ia = known(a), ib = known(b);
            const std::string made = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
            const int32_t made_id = known(made);
            merges_[pair_key(ia, ib)] = {static_cast<int32_t>(rank), made_id};  // a repeated pair: the last wins
        }
        for (int b = 0; b < 256; ++b) {
            const auto id = vocab_.find(fmt::format("<0x{:02X}>", b));
            byte_ids_[static_cast<size_t>(b)] = id ? *id : -1;
        }
        if (options_.unk_token) unk_id_ = vocab_.find(*options_.unk_token);
    }

    void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
        if (options_.ignore_merges) {
            if (const auto id = vocab_.find(word)) {
                out.push_back(*id);
                return;
            }
        }
        std::vector<Symbol> symbols = initial_symbols(word);
        merge_all(symbols);
        for (const Symbol& s : symbols) {
            if (s.len != 0) out.push_back(s.id);
        }
    }

private:
    struct Symbol {
        int32_t id;
        int32_t prev;
        int32_t next;
        uint32_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
    };

    int32_t unk_id() const {
        TPS_CHECK_AS(InputError, unk_id_.has_value(), "{}: model.unk_token '{}' is not in the vocabulary", origin_,
                     *options_.unk_token);
        return *unk_id_;
    }

    // tokenizers' BPE::merge_word.
    std::vector<Symbol> initial_symbols(std::string_view w) const {
        std::vector<Symbol> symbols;
        symbols.reserve(w.size());
        const auto add = [&](int32_t id, size_t len) {
            const auto n = static_cast<int32_t>(symbols.size());
            symbols.push_back({id, n - 1, -1, static_cast<uint32_t>(len)});
            if (n > 0) symbols[static_cast<size_t>(n - 1)].next = n;
        };
        // a pending run of unknown characters: its id and bytes (none while pending_unk is -1)
        int32_t pending_unk = -1;
        size_t pending_len = 0;
        const auto flush_unk = [&] {
            if (pending_unk >= 0) add(pending_unk, pending_len);
            pending_unk = -1;
        };
        std::string decorated;
        for (size_t i = 0; i < w.size();) {
            const size_t n = utf8_char_length(static_cast<unsigned char>(w[i]));
            const bool first = i == 0, last = i + n >= w.size();
            std::string_view piece = w.substr(i, n);
            if ((!first && !options_.continuing_subword_prefix.empty()) ||
                (last && !options_.end_of_word_suffix.empty())) {
                decorated.assign(first ? "" : options_.continuing_subword_prefix);
                decorated.append(piece);
                if (last) decorated.append(options_.end_of_word_suffix);
                piece = decorated;
            }
            i += n;
            if (const auto id = vocab_.find(piece)) {
                flush_unk();
                add(*id, n);
                continue;
            }
            if (options_.byte_fallback && byte_tokens_exist(piece)) {
                for (const char c : piece) add(byte_ids_[static_cast<unsigned char>(c)], 1);
                continue;
            }
            if (options_.unk_token) {
                if (pending_unk >= 0 && options_.fuse_unk) {
                    pending_len += n;
                } else {
                    flush_unk();
                    pending_unk = unk_id();
                    pending_len = n;
                }
            }
        }
        flush_unk();
        return symbols;
    }

    bool byte_tokens_exist(std::string_view piece) const {
        for (const char c : piece) {
            if (byte_ids_[static_cast<unsigned char>(c)] < 0) return false;
        }
        return true;
    }

    struct Candidate {
        int32_t rank;
        int32_t pos;
        int32_t new_id;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };

    const MergeTarget* find_merge(int32_t a, int32_t b) const {
        const auto it = merges_.find(pair_key(a, b));
        return it == merges_.end() ? nullptr : &it->second;
    }

    // tokenizers' Word::merge_all without dropout.
    void merge_all(std::vector<Symbol>& sym) const {
        std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
        for (size_t i = 0; i + 1 < sym.size(); ++i) {
            if (const MergeTarget* m = find_merge(sym[i].id, sym[i + 1].id)) {
                queue.push({m->rank, static_cast<int32_t>(i), m->new_id});
            }
        }
        while (!queue.empty()) {
            const Candidate top = queue.top();
            queue.pop();
            Symbol& left = sym[static_cast<size_t>(top.pos)];
            if (left.len == 0 || left.next == -1) continue;
            const auto right_pos = static_cast<size_t>(left.next);
            Symbol& right = sym[right_pos];
            const MergeTarget* still = find_merge(left.id, right.id);
            if (still == nullptr || still->new_id != top.new_id) continue;  // stale entry
            left.id = top.new_id;
            left.len += right.len;
            left.next = right.next;
            right.len = 0;
            if (left.next >= 0) sym[static_cast<size_t>(left.next)].prev = top.pos;
            if (left.prev >= 0) {
                const Symbol& prev = sym[static_cast<size_t>(left.prev)];
                if (const MergeTarget* m = find_merge(prev.id, left.id)) queue.push({m->rank, left.prev, m->new_id});
            }
            if (left.next >= 0) {
                const Symbol& next = sym[static_cast<size_t>(left.next)];
                if (const MergeTarget* m = find_merge(left.id, next.id)) queue.push({m->rank, top.pos, m->new_id});
            }
        }
    }

    BpeOptions options_;
    std::string origin_;
    std::unordered_map<uint64_t, MergeTarget> merges_;
    std::array<int32_t, 256> byte_ids_{};
    std::optional<int32_t> unk_id_;
};

}  // namespace

std::unique_ptr<Model> make_bpe_model(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                                      BpeOptions options, std::string_view origin) {
    return std::make_unique<Bpe>(std::move(vocab), merges, std::move(options), origin);
}

}  // namespace tps::tok
