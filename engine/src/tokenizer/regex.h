// Regular expressions for normalizers and pre-tokenizers, on PCRE2 (UTF + UCP, JIT when the
// library has it). Patterns are written for Oniguruma, the engine Hugging Face tokenizers uses:
// the few escapes whose meaning differs in PCRE2 (\s, \S, \w, \W, \h, \H) are rewritten to
// Oniguruma's sets before compiling. Matches iterate with Rust's rules for empty matches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::tok {

class Regex {
public:
    // A literal pattern (Split / Replace {"String": ...}) or a regular expression ({"Regex": ...}).
    // Errors: tps::InputError naming `what` and PCRE2's message.
    static Regex literal(std::string_view text, std::string_view what);
    static Regex pattern(std::string_view onig_pattern, std::string_view what);

    Regex(Regex&&) noexcept;
    Regex& operator=(Regex&&) noexcept;
    ~Regex();

    // Every match in `subject` (valid UTF-8) as [begin, end) byte offsets, left to right,
    // non-overlapping; an empty match right where the previous one ended is skipped and the search
    // moves one character on after an empty match (as Rust's regex and onig crates do).
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view subject) const;
    // Replace every match with `with`.
    std::string replace_all(std::string_view subject, std::string_view with) const;

    const std::string& source() const { return source_; }

private:
    struct Code;
    Regex(std::unique_ptr<Code> code, std::string source);
    static std::unique_ptr<Code> compile(std::string_view pattern, uint32_t extra_options, std::string_view what,
                                         std::string_view shown);
    std::unique_ptr<Code> code_;
    std::string source_;
};

// The Oniguruma pattern rewritten for PCRE2 (exposed for tests).
std::string onig_to_pcre2(std::string_view pattern);

}  // namespace tps::tok
