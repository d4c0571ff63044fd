// Normalizers rewrite the whole text of a piece; tokenizers' alignment tracking is not needed
// because the engine never reports offsets.
#include "normalizers.h"

#include "unicode_norm.h"
#include "utf8.h"

namespace tps::tok {
namespace {

class Nfc final : public Normalizer {
public:
    std::string normalize(std::string s) const override { return nfc(s); }
};

class Nfd final : public Normalizer {
public:
    std::string normalize(std::string s) const override { return nfd(s); }
};

class Prepend final : public Normalizer {
public:
    explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
    std::string normalize(std::string s) const override { return s.empty() ? s : prefix_ + s; }

private:
    std::string prefix_;
};

class Replace final : public Normalizer {
public:
    Replace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
    std::string normalize(std::string s) const override { return pattern_.replace_all(s, content_); }

private:
    Regex pattern_;
    std::string content_;
};

class Strip final : public Normalizer {
public:
    Strip(bool left, bool right) : left_(left), right_(right) {}
    std::string normalize(std::string s) const override {
        size_t begin = 0, end = s.size();
        if (left_) {
            while (begin < end) {
                size_t n = 0;
                if (!is_white_space(utf8_decode(s, begin, &n))) break;
                begin += n;
            }
        }
        if (right_) {
            while (end > begin) {
                size_t start = end - 1;
                while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
                size_t n = 0;
                if (!is_white_space(utf8_decode(s, start, &n))) break;
                end = start;
            }
        }
        return s.substr(begin, end - begin);
    }

private:
    bool left_, right_;
};

class Sequence final : public Normalizer {
public:
    explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
    std::string normalize(std::string s) const override {
        for (const auto& p : parts_) s = p->normalize(std::move(s));
        return s;
    }

private:
    std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_nfc_normalizer() { return std::make_unique<Nfc>(); }
std::unique_ptr<Normalizer> make_nfd_normalizer() { return std::make_unique<Nfd>(); }
std::unique_ptr<Normalizer> make_prepend_normalizer(std::string prefix) {
    return std::make_unique<Prepend>(std::move(prefix));
}
std::unique_ptr<Normalizer> make_replace_normalizer(Regex pattern, std::string content) {
    return std::make_unique<Replace>(std::move(pattern), std::move(content));
}
std::unique_ptr<Normalizer> make_strip_normalizer(bool left, bool right) {
    return std::make_unique<Strip>(left, right);
}
std::unique_ptr<Normalizer> make_sequence_normalizer(std::vector<std::unique_ptr<Normalizer>> parts) {
    return std::make_unique<Sequence>(std::move(parts));
}

}  // namespace tps::tok
