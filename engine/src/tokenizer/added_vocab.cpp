// Matching after tokenizers' AddedVocabulary::find_matches: the non-overlapping leftmost-longest
// matches are found first; a single_word token whose match touches a word character (\w) is then
// dropped, lstrip / rstrip widen a match over the White_Space next to it. Each match becomes a
// piece holding its token id; the text between matches stays text.
#include "added_vocab.h"

#include "regex.h"
#include "tpserve/common/check.h"
#include "utf8.h"

#include <algorithm>

namespace tps::tok {

void TokenTrie::insert(std::string_view key, int32_t value) {
    int32_t at = 0;
    for (const char ch : key) {
        const auto c = static_cast<unsigned char>(ch);
        auto& next = nodes_[static_cast<size_t>(at)].next;
        const auto it = std::find_if(next.begin(), next.end(), [c](const auto& e) { return e.first == c; });
        if (it != next.end()) {
            at = it->second;
            continue;
        }
        const auto created = static_cast<int32_t>(nodes_.size());
        next.emplace_back(c, created);
        nodes_.emplace_back();
        at = created;
    }
    nodes_[static_cast<size_t>(at)].value = value;
    if (!key.empty()) first_[static_cast<unsigned char>(key[0])] = true;
}

std::pair<size_t, int32_t> TokenTrie::longest_at(std::string_view s, size_t i) const {
    if (i >= s.size() || !first_[static_cast<unsigned char>(s[i])]) return {0, -1};
    std::pair<size_t, int32_t> best{0, -1};
    int32_t at = 0;
    for (size_t k = i; k < s.size(); ++k) {
        const auto c = static_cast<unsigned char>(s[k]);
        const auto& next = nodes_[static_cast<size_t>(at)].next;
        const auto it = std::find_if(next.begin(), next.end(), [c](const auto& e) { return e.first == c; });
        if (it == next.end()) break;
        at = it->second;
        if (nodes_[static_cast<size_t>(at)].value >= 0) best = {k + 1 - i, nodes_[static_cast<size_t>(at)].value};
    }
    return best;
}

void AddedVocabulary::add(AddedToken token, std::string_view origin) {
    TPS_CHECK_AS(InputError, !token.content.empty(), "{}: added token {} has empty content", origin, token.id);
    TPS_CHECK_AS(InputError, token.id >= 0, "{}: added token '{}' has a negative id", origin, token.content);
    if (const auto it = by_content_.find(token.content); it != by_content_.end()) {
        TPS_CHECK_AS(InputError, tokens_[it->second].id == token.id, "{}: added token '{}' has two ids, {} and {}",
                     origin, token.content, tokens_[it->second].id, token.id);
        tokens_[it->second] = token;  // the same token again: the later flags win
    } else {
        TPS_CHECK_AS(InputError, by_id_.count(token.id) == 0, "{}: added tokens '{}' and '{}' share the id {}",
                     origin, tokens_[by_id_[token.id]].content, token.content, token.id);
        by_content_[token.content] = tokens_.size();
        by_id_[token.id] = tokens_.size();
        tokens_.push_back(token);
    }
    if (token.special) {
        special_.insert(token.content);
    } else {
        special_.erase(token.content);
    }
}

void AddedVocabulary::build(const Normalizer* normalizer) {
    raw_ = TokenTrie();
    normalized_ = TokenTrie();
    for (size_t i = 0; i < tokens_.size(); ++i) {
        AddedToken& t = tokens_[i];
        if (!t.normalized) {
            t.text = t.content;
            raw_.insert(t.content, static_cast<int32_t>(i));
        } else {
            t.text = normalizer ? normalizer->normalize(t.content) : t.content;
            if (!t.text.empty()) normalized_.insert(t.text, static_cast<int32_t>(i));
        }
    }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::id_of(std::string_view content) const {
    const auto it = by_content_.find(content);
    return it == by_content_.end() ? std::nullopt : std::optional<int32_t>(tokens_[it->second].id);
}

int32_t AddedVocabulary::end_id() const {
    int32_t end = 0;
    for (const AddedToken& t : tokens_) end = std::max(end, t.id + 1);
    return end;
}

namespace {

// Rust regex's \w (UTS #18 "word", which tokenizers' single_word test uses): Alphabetic, marks,
// decimal digits, connector punctuation, Join_Control. Not Oniguruma's \w.
bool is_word_char(char32_t c) {
    static const Regex word =
        Regex::pattern(R"(\A[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", "added-token word test");
    std::string s;
    utf8_append(s, c);
    return !word.find_all(s).empty();
}

char32_t last_char(std::string_view s) {
    size_t start = s.size() - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t n = 0;
    return utf8_decode(s, start, &n);
}

// Start of the White_Space run that ends s.
size_t trailing_space_start(std::string_view s) {
    size_t end = s.size();
    while (end > 0) {
        size_t start = end - 1;
        while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t n = 0;
        if (!is_white_space(utf8_decode(s, start, &n))) break;
        end = start;
    }
    return end;
}

// Length of the White_Space run that starts s.
size_t leading_space_length(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t n = 0;
        if (!is_white_space(utf8_decode(s, i, &n))) break;
        i += n;
    }
    return i;
}

}  // namespace

void AddedVocabulary::split(std::vector<Piece>& pieces, const TokenTrie& trie) const {
    if (trie.empty()) return;
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (Piece& p : pieces) {
        if (p.token >= 0) {
            out.push_back(std::move(p));
            continue;
        }
        const std::string_view s = p.text;
        size_t start_offset = 0;
        const auto emit = [&](size_t b, size_t e, int32_t token) {
            if (b < e) out.push_back({std::string(s.substr(b, e - b)), p.at_start && b == 0, token});
        };
        for (size_t i = 0; i < s.size();) {
            const auto [len, index] = trie.longest_at(s, i);
            if (len == 0) {
                ++i;
                continue;
            }
            const AddedToken& t = tokens_[static_cast<size_t>(index)];
            size_t start = i, stop = i + len;
            i = stop;
            if (t.single_word) {
                const bool start_space = start == 0 || !is_word_char(last_char(s.substr(0, start)));
                const bool stop_space = stop == s.size() || [&] {
                    size_t n = 0;
                    return !is_word_char(utf8_decode(s, stop, &n));
                }();
                if (!start_space || !stop_space) continue;
            }
            if (t.lstrip) start = std::max(trailing_space_start(s.substr(0, start)), start_offset);
            if (t.rstrip) stop += leading_space_length(s.substr(stop));
            if (start_offset < start) emit(start_offset, start, -1);
            out.push_back({std::string(s.substr(start, stop - start)), p.at_start && start == 0, t.id});
            start_offset = stop;
        }
        if (start_offset < s.size()) emit(start_offset, s.size(), -1);
    }
    pieces = std::move(out);
}

void AddedVocabulary::extract(std::vector<Piece>& pieces, const Normalizer* normalizer) const {
    split(pieces, raw_);
    if (normalizer) {
        std::vector<Piece> kept;
        kept.reserve(pieces.size());
        for (Piece& p : pieces) {
            if (p.token < 0) p.text = normalizer->normalize(std::move(p.text));
            if (p.token >= 0 || !p.text.empty()) kept.push_back(std::move(p));
        }
        pieces = std::move(kept);
    }
    split(pieces, normalized_);
}

}  // namespace tps::tok
