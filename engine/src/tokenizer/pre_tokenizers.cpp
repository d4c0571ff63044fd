// Each pre-tokenizer turns a piece into match spans (tokenizers' Pattern::find_matches: the whole
// text covered by alternating matched / unmatched spans), groups them by the delimiter behaviour,
// and keeps the non-empty results. Pieces that are already added tokens pass through.
#include "pre_tokenizers.h"

#include "byte_level.h"

#include <algorithm>

namespace tps::tok {
namespace {

struct Span {
    size_t begin;
    size_t end;
    bool match;
};

std::vector<Span> spans_of(size_t length, const std::vector<std::pair<size_t, size_t>>& matches) {
    std::vector<Span> spans;
    spans.reserve(matches.size() * 2 + 1);
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
        if (prev != b) spans.push_back({prev, b, false});
        spans.push_back({b, e, true});
        prev = e;
    }
    if (prev != length) spans.push_back({prev, length, false});
    return spans;
}

// tokenizers' NormalizedString::split: which spans become pieces under `behavior`.
void split_piece(const Piece& piece, const std::vector<Span>& spans, SplitBehavior behavior,
                 std::vector<Piece>& out) {
    struct Cut {
        size_t begin, end;
        bool remove;
    };
    std::vector<Cut> cuts;
    cuts.reserve(spans.size());
    switch (behavior) {
    case SplitBehavior::isolated:
        for (const Span& s : spans) cuts.push_back({s.begin, s.end, false});
        break;
    case SplitBehavior::removed:
        for (const Span& s : spans) cuts.push_back({s.begin, s.end, s.match});
        break;
    case SplitBehavior::contiguous: {
        bool previous_match = false;
        for (const Span& s : spans) {
            if (s.match == previous_match && !cuts.empty()) {
                cuts.back().end = s.end;
            } else {
                cuts.push_back({s.begin, s.end, false});
            }
            previous_match = s.match;
        }
        break;
    }
    case SplitBehavior::merged_with_previous: {
        bool previous_match = false;
        for (const Span& s : spans) {
            if (s.match && !previous_match && !cuts.empty()) {
                cuts.back().end = s.end;
            } else {
                cuts.push_back({s.begin, s.end, false});
            }
            previous_match = s.match;
        }
        break;
    }
    case SplitBehavior::merged_with_next: {
        bool previous_match = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
            if (it->match && !previous_match && !cuts.empty()) {
                cuts.back().begin = it->begin;
            } else {
                cuts.push_back({it->begin, it->end, false});
            }
            previous_match = it->match;
        }
        std::reverse(cuts.begin(), cuts.end());
        break;
    }
    }
    for (const Cut& c : cuts) {
        if (c.remove || c.begin == c.end) continue;
        out.push_back({piece.text.substr(c.begin, c.end - c.begin), piece.at_start && c.begin == 0, -1});
    }
}

// Applies fn(piece, out) to every piece that is not an added token.
template <class Fn>
void for_each_text_piece(std::vector<Piece>& pieces, Fn&& fn) {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (Piece& p : pieces) {
        if (p.token >= 0) {
            out.push_back(std::move(p));
        } else {
            fn(p, out);
        }
    }
    pieces = std::move(out);
}

std::vector<std::pair<size_t, size_t>> literal_matches(std::string_view text, std::string_view needle) {
    std::vector<std::pair<size_t, size_t>> m;
    for (size_t at = text.find(needle); at != std::string_view::npos; at = text.find(needle, at + needle.size())) {
        m.emplace_back(at, at + needle.size());
    }
    return m;
}

class Split final : public PreTokenizer {
public:
    Split(Regex pattern, SplitBehavior behavior, bool invert)
        : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
    void pre_tokenize(std::vector<Piece>& pieces) const override {
        for_each_text_piece(pieces, [&](const Piece& p, std::vector<Piece>& out) {
            std::vector<Span> spans = spans_of(p.text.size(), pattern_.find_all(p.text));
            if (invert_) {
                for (Span& s : spans) s.match = !s.match;
            }
            split_piece(p, spans, behavior_, out);
        });
    }

private:
    Regex pattern_;
    SplitBehavior behavior_;
    bool invert_;
};

class ByteLevel final : public PreTokenizer {
public:
    ByteLevel(bool add_prefix_space, bool use_regex)
        : add_prefix_space_(add_prefix_space), regex_(use_regex ? std::make_unique<Regex>(Regex::pattern(
                                                                      kGpt2Pattern, "ByteLevel pre-tokenizer"))
                                                                : nullptr) {}
    void pre_tokenize(std::vector<Piece>& pieces) const override {
        for_each_text_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
            if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, 1, ' ');
            const size_t first = out.size();
            if (regex_) {
                split_piece(p, spans_of(p.text.size(), regex_->find_all(p.text)), SplitBehavior::isolated, out);
            } else if (!p.text.empty()) {
                out.push_back(std::move(p));
            }
            for (size_t i = first; i < out.size(); ++i) out[i].text = bytes_to_unicode(out[i].text);
        });
    }

private:
    bool add_prefix_space_;
    std::unique_ptr<Regex> regex_;
};

class Metaspace final : public PreTokenizer {
public:
    Metaspace(std::string replacement, PrependScheme scheme, bool split)
        : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
    void pre_tokenize(std::vector<Piece>& pieces) const override {
        for_each_text_piece(pieces, [&](Piece& p, std::vector<Piece>& out) {
            std::string text;
            text.reserve(p.text.size() + replacement_.size());
            for (const char c : p.text) {
                if (c == ' ') {
                    text += replacement_;
                } else {
                    text += c;
                }
            }
            const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
            bool prepend = false;
            switch (scheme_) {
            case PrependScheme::always: prepend = !starts; break;
            case PrependScheme::first: prepend = !starts && p.at_start; break;
            case PrependScheme::never: break;
            }
            if (prepend) text.insert(0, replacement_);
            p.text = std::move(text);
            if (split_) {
                split_piece(p, spans_of(p.text.size(), literal_matches(p.text, replacement_)),
                            SplitBehavior::merged_with_next, out);
            } else if (!p.text.empty()) {
                out.push_back(std::move(p));
            }
        });
    }

private:
    std::string replacement_;
    PrependScheme scheme_;
    bool split_;
};

class Digits final : public PreTokenizer {
public:
    explicit Digits(bool individual)
        : numeric_(Regex::pattern(R"(\p{N})", "Digits pre-tokenizer")),
          behavior_(individual ? SplitBehavior::isolated : SplitBehavior::contiguous) {}
    void pre_tokenize(std::vector<Piece>& pieces) const override {
        for_each_text_piece(pieces, [&](const Piece& p, std::vector<Piece>& out) {
            split_piece(p, spans_of(p.text.size(), numeric_.find_all(p.text)), behavior_, out);
        });
    }

private:
    Regex numeric_;
    SplitBehavior behavior_;
};

class Sequence final : public PreTokenizer {
public:
    explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
    void pre_tokenize(std::vector<Piece>& pieces) const override {
        for (const auto& p : parts_) p->pre_tokenize(pieces);
    }

private:
    std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_split_pre_tokenizer(Regex pattern, SplitBehavior behavior, bool invert) {
    return std::make_unique<Split>(std::move(pattern), behavior, invert);
}
std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex) {
    return std::make_unique<ByteLevel>(add_prefix_space, use_regex);
}
std::unique_ptr<PreTokenizer> make_metaspace_pre_tokenizer(std::string replacement, PrependScheme scheme,
                                                           bool split) {
    return std::make_unique<Metaspace>(std::move(replacement), scheme, split);
}
std::unique_ptr<PreTokenizer> make_digits_pre_tokenizer(bool individual) {
    return std::make_unique<Digits>(individual);
}
std::unique_ptr<PreTokenizer> make_sequence_pre_tokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) {
    return std::make_unique<Sequence>(std::move(parts));
}

}  // namespace tps::tok
