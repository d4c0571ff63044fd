// Byte-level text is decoded lossily (an invalid sequence becomes U+FFFD, Rust's from_utf8_lossy);
// a run of <0xXX> tokens that is not valid UTF-8 becomes one U+FFFD per byte, as tokenizers'
// ByteFallback does. Both quirks are kept so that decode() equals tokenizers' output.
#include "decoders.h"

#include "byte_level.h"
#include "utf8.h"

#include <algorithm>

namespace tps::tok {
namespace {

class ByteLevel final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override { tokens.assign(1, utf8_repair(raw(tokens))); }
    void decode_inside(std::vector<std::string>& tokens) const override { tokens.assign(1, raw(tokens)); }

private:
    static std::string raw(const std::vector<std::string>& tokens) {
        std::string bytes;
        for (const std::string& t : tokens) {
            const size_t mark = bytes.size();
            bool all = true;
            for (size_t i = 0; i < t.size() && all;) {
                size_t n = 0;
                const auto b = unicode_to_byte(utf8_decode(t, i, &n));
                i += n;
                if (b) {
                    bytes += static_cast<char>(*b);
                } else {
                    all = false;
                }
            }
            if (!all) {
                bytes.resize(mark);
                bytes += t;  // a token outside the byte alphabet stands for its own UTF-8
            }
        }
        return bytes;
    }
};

class Replace final : public Decoder {
public:
    Replace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) t = pattern_.replace_all(t, content_);
    }

private:
    Regex pattern_;
    std::string content_;
};

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// "<0xXX>" -> the byte; XX parsed as Rust's u8::from_str_radix(_, 16) does (a '+' may lead).
std::optional<unsigned char> byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
    const int hi = t[3] == '+' ? 0 : hex_digit(t[3]);
    const int lo = hex_digit(t[4]);
    if (hi < 0 || lo < 0) return std::nullopt;
    return static_cast<unsigned char>(hi * 16 + lo);
}

class ByteFallback final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override { join_runs(tokens, true); }
    void decode_inside(std::vector<std::string>& tokens) const override { join_runs(tokens, false); }
    bool has_byte_fallback() const override { return true; }

private:
    // Each run of <0xXX> tokens becomes its bytes; with `repair`, a run that is not valid UTF-8
    // becomes one U+FFFD per byte instead.
    static void join_runs(std::vector<std::string>& tokens, bool repair) {
        std::vector<std::string> out;
        out.reserve(tokens.size());
        std::string run;
        const auto flush = [&] {
            if (run.empty()) return;
            if (!repair || utf8_is_valid(run)) {
                out.push_back(run);
            } else {
                for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementUtf8);
            }
            run.clear();
        };
        for (std::string& t : tokens) {
            if (const auto b = byte_token(t)) {
                run += static_cast<char>(*b);
                continue;
            }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        tokens = std::move(out);
    }
};

class Fuse final : public Decoder {
public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
    }
};

class Strip final : public Decoder {
public:
    Strip(char32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) {
            const std::u32string chars = utf8_to_u32(t);
            size_t begin = 0;
            while (begin < std::min(start_, chars.size()) && chars[begin] == content_) ++begin;
            size_t end = chars.size();
            for (size_t i = 0; i < stop_ && end > begin && chars[end - 1] == content_; ++i) --end;
            t = u32_to_utf8(std::u32string_view(chars).substr(begin, end - begin));
        }
    }
    void decode_inside(std::vector<std::string>&) const override {}

private:
    char32_t content_;
    size_t start_, stop_;
};

class Metaspace final : public Decoder {
public:
    Metaspace(char32_t replacement, bool drop_first) : replacement_(replacement), drop_first_(drop_first) {}
    void decode_chain(std::vector<std::string>& tokens) const override { replace(tokens, drop_first_); }
    void decode_inside(std::vector<std::string>& tokens) const override { replace(tokens, false); }

private:
    void replace(std::vector<std::string>& tokens, bool drop_first) const {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::string out;
            const std::string& t = tokens[i];
            for (size_t k = 0; k < t.size();) {
                size_t n = 0;
                const char32_t c = utf8_decode(t, k, &n);
                if (c != replacement_) {
                    out.append(t, k, n);
                } else if (i != 0 || !drop_first) {
                    out += ' ';
                }
                k += n;
            }
            tokens[i] = std::move(out);
        }
    }

    char32_t replacement_;
    bool drop_first_;
};

class Sequence final : public Decoder {
public:
    explicit Sequence(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (const auto& p : parts_) p->decode_chain(tokens);
    }
    void decode_inside(std::vector<std::string>& tokens) const override {
        for (const auto& p : parts_) p->decode_inside(tokens);
    }
    bool has_byte_fallback() const override {
        return std::any_of(parts_.begin(), parts_.end(), [](const auto& p) { return p->has_byte_fallback(); });
    }

private:
    std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevel>(); }
std::unique_ptr<Decoder> make_replace_decoder(Regex pattern, std::string content) {
    return std::make_unique<Replace>(std::move(pattern), std::move(content));
}
std::unique_ptr<Decoder> make_byte_fallback_decoder() { return std::make_unique<ByteFallback>(); }
std::unique_ptr<Decoder> make_fuse_decoder() { return std::make_unique<Fuse>(); }
std::unique_ptr<Decoder> make_strip_decoder(char32_t content, size_t start, size_t stop) {
    return std::make_unique<Strip>(content, start, stop);
}
std::unique_ptr<Decoder> make_metaspace_decoder(char32_t replacement, bool drop_first) {
    return std::make_unique<Metaspace>(replacement, drop_first);
}
std::unique_ptr<Decoder> make_sequence_decoder(std::vector<std::unique_ptr<Decoder>> parts) {
    return std::make_unique<Sequence>(std::move(parts));
}

}  // namespace tps::tok
