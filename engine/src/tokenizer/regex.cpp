// PCRE2 wrapper. Each thread keeps one match-data block and one JIT stack (a compiled pattern is
// shared read-only between threads; match data and JIT stacks are not). A JIT match that runs out
// of stack is retried with the interpreter, which works from the heap.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include "tpserve/common/check.h"
#include "utf8.h"

#include <pcre2.h>

namespace tps::tok {
namespace {

// Oniguruma's \s in Unicode mode is the White_Space property; PCRE2's (with UCP) adds U+180E.
constexpr std::string_view kSpaceSet =
    R"(\t\n\x0B\f\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
// Oniguruma's \w (Unicode): Letter, Mark, Number, Connector_Punctuation. PCRE2's lacks marks and
// connectors other than '_'.
constexpr std::string_view kWordSet = R"(\p{L}\p{M}\p{N}\p{Pc})";
// Oniguruma's \h is a hexadecimal digit (PCRE2's is horizontal space).
constexpr std::string_view kHexSet = "0-9A-Fa-f";

std::string pcre2_message(int code) {
    PCRE2_UCHAR buf[256];
    const int n = pcre2_get_error_message(code, buf, sizeof buf);
    return n < 0 ? fmt::format("PCRE2 error {}", code) : std::string(reinterpret_cast<const char*>(buf));
}

struct ThreadMatchState {
    pcre2_match_data* data = nullptr;
    pcre2_jit_stack* jit_stack = nullptr;
    pcre2_match_context* context = nullptr;
    ThreadMatchState() {
        data = pcre2_match_data_create(1, nullptr);
        context = pcre2_match_context_create(nullptr);
        jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
        if (context && jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    ~ThreadMatchState() {
        pcre2_match_data_free(data);
        pcre2_match_context_free(context);
        pcre2_jit_stack_free(jit_stack);
    }
    ThreadMatchState(const ThreadMatchState&) = delete;
    ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& match_state() {
    thread_local ThreadMatchState state;
    TPS_CHECK(state.data != nullptr && state.context != nullptr, "PCRE2: out of memory for match data");
    return state;
}

}  // namespace

struct Regex::Code {
    pcre2_code* code = nullptr;
    bool jit = false;
    ~Code() { pcre2_code_free(code); }
};

std::string onig_to_pcre2(std::string_view p) {
    std::string out;
    out.reserve(p.size() + 64);
    bool in_class = false;
    for (size_t i = 0; i < p.size(); ++i) {
        const char c = p[i];
        if (c == '\\' && i + 1 < p.size()) {
            const char e = p[i + 1];
            ++i;
            const auto set = [&](std::string_view members, bool negated) {
                if (in_class && !negated) {
                    out += members;
                } else if (in_class) {
                    out += '\\';  // a negated set inside a class keeps PCRE2's meaning
                    out += e;
                } else {
                    out += negated ? "[^" : "[";
                    out += members;
                    out += ']';
                }
            };
            switch (e) {
            case 's': set(kSpaceSet, false); break;
            case 'S': set(kSpaceSet, true); break;
            case 'w': set(kWordSet, false); break;
            case 'W': set(kWordSet, true); break;
            case 'h': set(kHexSet, false); break;
            case 'H': set(kHexSet, true); break;
            default:
                out += '\\';
                out += e;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            out += c;
            // a ']' right after '[' or '[^' is a literal member
            if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
            if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
            continue;
        }
        if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
            const size_t end = p.find(":]", i + 2);  // POSIX class [:alpha:]
            if (end != std::string_view::npos) {
                out.append(p.substr(i, end + 2 - i));
                i = end + 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = false;
        out += c;
    }
    return out;
}

Regex::Regex(std::unique_ptr<Code> code, std::string source) : code_(std::move(code)), source_(std::move(source)) {}
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

std::unique_ptr<Regex::Code> Regex::compile(std::string_view pattern, uint32_t extra, std::string_view what,
                                            std::string_view shown) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    auto code = std::make_unique<Regex::Code>();
    // PCRE2_LITERAL admits no UCP (nothing in a literal depends on character properties)
    const uint32_t ucp = (extra & PCRE2_LITERAL) ? 0 : PCRE2_UCP;
    code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_UTF | ucp | PCRE2_NO_UTF_CHECK | extra, &err, &err_offset, nullptr);
    TPS_CHECK_AS(InputError, code->code != nullptr, "{}: cannot compile the pattern '{}': {} (at offset {})", what,
                 shown, pcre2_message(err), err_offset);
    code->jit = pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE) == 0;
    return code;
}

Regex Regex::literal(std::string_view text, std::string_view what) {
    TPS_CHECK_AS(InputError, utf8_is_valid(text), "{}: the pattern is not valid UTF-8", what);
    return Regex(compile(text, PCRE2_LITERAL, what, text), std::string(text));
}

Regex Regex::pattern(std::string_view onig_pattern, std::string_view what) {
    TPS_CHECK_AS(InputError, utf8_is_valid(onig_pattern), "{}: the pattern is not valid UTF-8", what);
    return Regex(compile(onig_to_pcre2(onig_pattern), 0, what, onig_pattern), std::string(onig_pattern));
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view subject) const {
    std::vector<std::pair<size_t, size_t>> out;
    ThreadMatchState& st = match_state();
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
    size_t from = 0;
    bool have_last = false;
    size_t last_end = 0;
    while (from <= subject.size()) {
        int rc = code_->jit ? pcre2_jit_match(code_->code, s, subject.size(), from, 0, st.data, st.context)
                            : PCRE2_ERROR_JIT_BADOPTION;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION) {
            rc = pcre2_match(code_->code, s, subject.size(), from, PCRE2_NO_UTF_CHECK, st.data, st.context);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        TPS_CHECK(rc >= 0, "regex '{}' failed on a text of {} bytes: {}", source_, subject.size(), pcre2_message(rc));
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
        const size_t b = ov[0], e = ov[1];
        if (b == e) {
            // step one character on; an empty match where the last match ended is not reported
            from = e < subject.size() ? e + utf8_char_length(static_cast<unsigned char>(subject[e])) : e + 1;
            if (have_last && last_end == e) continue;
        } else {
            from = e;
        }
        out.emplace_back(b, e);
        have_last = true;
        last_end = e;
    }
    return out;
}

std::string Regex::replace_all(std::string_view subject, std::string_view with) const {
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : find_all(subject)) {
        out.append(subject.substr(prev, b - prev));
        out.append(with);
        prev = e;
    }
    out.append(subject.substr(prev));
    return out;
}

}  // namespace tps::tok
