// llama.cpp's llm_tokenizer_spm: the text (spaces already "▁") starts as one symbol per UTF-8
// character; a max-heap on (score of the merged piece, leftmost first) merges adjacent symbols
// whose concatenation is a vocabulary entry. A final symbol that is no entry (a lone character
// the vocabulary lacks) is written as its <0xXX> byte tokens.
#include "models.h"

#include "tpserve/common/check.h"
#include "utf8.h"

#include <fmt/format.h>

#include <array>
#include <queue>

namespace tps::tok {
namespace {

class Spm final : public Model {
public:
    Spm(Vocab vocab, std::vector<float> scores, std::optional<int32_t> unk, std::string_view origin)
        : scores_(std::move(scores)), unk_(unk), origin_(origin) {
        vocab_ = std::move(vocab);
        TPS_CHECK_AS(InputError, scores_.size() >= static_cast<size_t>(vocab_.end_id()),
                     "{}: {} scores for {} tokens", origin_, scores_.size(), vocab_.end_id());
        for (int b = 0; b < 256; ++b) {
            const auto id = vocab_.find(fmt::format("<0x{:02X}>", b));
            byte_ids_[static_cast<size_t>(b)] = id ? *id : -1;
        }
    }

    void tokenize(std::string_view text, std::vector<int32_t>& out) const override {
        std::vector<Symbol> sym;
        sym.reserve(text.size());
        for (size_t i = 0; i < text.size();) {
            const size_t n = utf8_char_length(static_cast<unsigned char>(text[i]));
            const auto idx = static_cast<int32_t>(sym.size());
            sym.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(n), idx - 1,
                           i + n >= text.size() ? -1 : idx + 1});
            i += n;
        }
        std::priority_queue<Bigram> queue;
        const auto try_add = [&](int32_t left, int32_t right) {
            if (left < 0 || right < 0) return;
            const Symbol& l = sym[static_cast<size_t>(left)];
            const Symbol& r = sym[static_cast<size_t>(right)];
            const auto id = vocab_.find(text.substr(l.start, l.len + r.len));
            if (!id) return;
            queue.push({left, right, scores_[static_cast<size_t>(*id)], l.len + r.len});
        };
        for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
        while (!queue.empty()) {
            const Bigram top = queue.top();
            queue.pop();
            Symbol& l = sym[static_cast<size_t>(top.left)];
            Symbol& r = sym[static_cast<size_t>(top.right)];
            if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;  // stale entry
            l.len += r.len;
            r.len = 0;
            l.next = r.next;
            if (r.next >= 0) sym[static_cast<size_t>(r.next)].prev = top.left;
            try_add(l.prev, top.left);
            try_add(top.left, l.next);
        }
        for (int32_t i = sym.empty() ? -1 : 0; i != -1; i = sym[static_cast<size_t>(i)].next) {
            const Symbol& s = sym[static_cast<size_t>(i)];
            const std::string_view piece = text.substr(s.start, s.len);
            if (const auto id = vocab_.find(piece)) {
                out.push_back(*id);
                continue;
            }
            bool bytes = true;
            for (const char c : piece) bytes = bytes && byte_ids_[static_cast<unsigned char>(c)] >= 0;
            if (bytes) {
                for (const char c : piece) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
                continue;
            }
            TPS_CHECK_AS(InputError, unk_.has_value(),
                         "{}: the vocabulary has neither a token nor byte tokens for '{}', and no unknown token",
                         origin_, piece);
            out.push_back(*unk_);
        }
    }

private:
    struct Symbol {
        uint32_t start;
        uint32_t len;  // 0 once merged into its left neighbour
        int32_t prev;
        int32_t next;
    };
    struct Bigram {
        int32_t left;
        int32_t right;
        float score;
        uint32_t size;
        // the heap's top: highest score, then leftmost
        bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
    };

    std::vector<float> scores_;
    std::optional<int32_t> unk_;
    std::string origin_;
    std::array<int32_t, 256> byte_ids_{};
};

}  // namespace

std::unique_ptr<Model> make_spm_model(Vocab vocab, std::vector<float> scores, std::optional<int32_t> unk,
                                      std::string_view origin) {
    return std::make_unique<Spm>(std::move(vocab), std::move(scores), unk, origin);
}

}  // namespace tps::tok
