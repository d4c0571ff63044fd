// tps::Tokenizer: encode runs tokenizers' pipeline (invalid UTF-8 repaired to U+FFFD first, as
// Python's errors='replace' does; added tokens extracted; normalizer; pre-tokenizer; model per
// piece; post-processor). decode maps ids to token strings (added tokens first) and runs the
// decoder chain. StreamDecoder decodes a short window of ids and emits only text that is final.
#include "tokenizer_impl.h"

#include "tpserve/common/check.h"
#include "utf8.h"

#include <algorithm>
#include <array>

namespace tps {

std::vector<int32_t> Tokenizer::Impl::encode(std::string_view text, bool add_special) const {
    std::vector<tok::Piece> pieces;
    if (!text.empty()) {
        pieces.push_back({tok::utf8_is_valid(text) ? std::string(text) : tok::utf8_repair(text), true, -1});
    }
    added.extract(pieces, normalizer.get());
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    for (const tok::Piece& p : pieces) {
        if (p.token >= 0) {
            ids.push_back(p.token);
        } else if (!p.text.empty()) {
            model->tokenize(p.text, ids);
        }
    }
    if (post_processor) post_processor->process(ids, add_special);
    return ids;
}

const std::string* Tokenizer::Impl::kept_token(int32_t id, bool skip_special) const {
    if (const tok::AddedToken* t = added.by_id(id)) return skip_special && t->special ? nullptr : &t->text;
    const std::string* s = model->vocab().text(id);
    if (s == nullptr || (skip_special && added.is_special_content(*s))) return nullptr;
    return s;
}

std::string Tokenizer::Impl::decode(std::span<const int32_t> ids, bool skip_special) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int32_t id : ids) {
        if (const std::string* s = kept_token(id, skip_special)) tokens.push_back(*s);
    }
    if (!decoder) {
        std::string out;
        for (size_t i = 0; i < tokens.size(); ++i) {
            if (i) out += ' ';
            out += tokens[i];
        }
        return out;
    }
    decoder->decode_chain(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
}

bool Tokenizer::Impl::ends_in_byte_run(std::span<const int32_t> ids, bool skip_special) const {
    if (!decoder || !decoder->has_byte_fallback()) return false;
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        if (const std::string* s = kept_token(*it, skip_special)) {
            return s->size() == 6 && s->compare(0, 3, "<0x") == 0 && s->back() == '>';
        }
    }
    return false;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
    return impl_->encode(text, add_special);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
    return impl_->decode(ids, skip_special);
}

int32_t Tokenizer::vocab_size() const { return std::max(impl_->model->vocab().end_id(), impl_->added.end_id()); }

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
    if (const auto id = impl_->added.id_of(token)) return id;
    return impl_->model->vocab().find(token);
}

std::string_view Tokenizer::token_text(int32_t id) const {
    if (const tok::AddedToken* t = impl_->added.by_id(id)) return t->text;
    const std::string* s = impl_->model->vocab().text(id);
    TPS_CHECK_AS(InputError, s != nullptr, "token id {} is not in the vocabulary of {} (size {})", id, impl_->origin,
                 vocab_size());
    return *s;
}

bool Tokenizer::is_special(int32_t id) const {
    const tok::AddedToken* t = impl_->added.by_id(id);
    return t != nullptr && t->special;
}

std::optional<std::string> Tokenizer::token_bytes(int32_t id) const {
    if (is_special(id)) return std::nullopt;
    const std::string* s = impl_->kept_token(id, true);
    if (s == nullptr) return std::nullopt;
    if (!impl_->decoder) return " " + *s;  // decode() joins tokens with spaces
    std::vector<std::string> tokens{*s};
    impl_->decoder->decode_inside(tokens);
    std::string out;
    for (const std::string& t : tokens) out += t;
    return out;
}

bool Tokenizer::token_changes_at_start(int32_t id) const {
    const auto bytes = token_bytes(id);
    if (!bytes || bytes->empty() || bytes->front() != ' ') return false;
    const std::array<int32_t, 1> one{id};
    const std::string alone = impl_->decode(one, true);
    return alone.empty() || alone.front() != ' ';
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

// --- StreamDecoder ---------------------------------------------------------------------------
// The window ids_ starts with one context token whose text was already emitted (prefix_ is its
// decode in this window); push() decodes the window and emits what follows prefix_ once it is
// final: not inside a byte-fallback run and not ending in U+FFFD (an incomplete character).
// Decoding the context together with the new tokens keeps the first-token rules (Strip's
// leading space, Metaspace's first "▁") applied to the same token in both decodes.

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special) : tok_(tok), skip_special_(skip_special) {}

void StreamDecoder::follow(std::span<const int32_t> shown) {
    ids_.clear();
    prefix_.clear();
    const Tokenizer::Impl& impl = *tok_.impl_;
    for (size_t i = shown.size(); i-- > 0;) {
        if (impl.kept_token(shown[i], skip_special_) == nullptr) continue;
        const std::vector<int32_t> context = {shown[i]};
        const std::string text = impl.decode(context, skip_special_);
        if (!impl.ends_in_byte_run(context, skip_special_) && !std::string_view(text).ends_with(tok::kReplacementUtf8)) {
            ids_ = context;
            prefix_ = text;
        }
        return;
    }
}

std::string StreamDecoder::push(int32_t id) {
    ids_.push_back(id);
    const Tokenizer::Impl& impl = *tok_.impl_;
    if (impl.ends_in_byte_run(ids_, skip_special_)) return {};
    std::string text = impl.decode(ids_, skip_special_);
    if (text.size() <= prefix_.size()) return {};
    if (std::string_view(text).ends_with(tok::kReplacementUtf8)) return {};
    TPS_CHECK(text.compare(0, prefix_.size(), prefix_) == 0,
              "stream decoding: the text of the window no longer starts with the text already emitted");
    std::string out = text.substr(prefix_.size());
    // the last token decode() keeps becomes the context of the next window
    size_t keep = ids_.size() - 1;
    while (keep > 0 && impl.kept_token(ids_[keep], skip_special_) == nullptr) --keep;
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(keep));
    prefix_ = impl.decode(ids_, skip_special_);
    return out;
}

std::string StreamDecoder::finish() {
    const std::string text = tok_.impl_->decode(ids_, skip_special_);
    std::string out = text.compare(0, prefix_.size(), prefix_) == 0 ? text.substr(prefix_.size()) : std::string();
    ids_.clear();
    prefix_.clear();
    return out;
}

}  // namespace tps
