// The lexer follows jinja2/lexer.py rule for rule: newlines are normalized and one trailing newline
// dropped; a tag's `-` strips all whitespace beside it; lstrip_blocks strips the spaces before a
// {% or {# that starts its line; trim_blocks drops the newline after %} and #}; and an end tag only
// counts while brackets are balanced, so {{ {'a': 1}}} ends where jinja2 says it does.
#include "lexer.h"

#include "pystr.h"

#include "tpserve/common/check.h"

#include <fmt/format.h>

#include <charconv>
#include <cctype>

namespace tps::chat {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// \r\n and \r become \n, and one trailing newline goes (keep_trailing_newline=False).
std::string normalize_newlines(std::string_view source) {
    std::string out;
    out.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
        if (source[i] == '\r') {
            out += '\n';
            if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
        } else {
            out += source[i];
        }
    }
    if (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
}

class Lexer {
public:
    Lexer(std::string_view source, const std::string& origin) : src_(normalize_newlines(source)), origin_(origin) {}

    std::vector<Token> run() {
        while (pos_ < src_.size()) {
            const size_t start = find_tag_start();
            if (start == std::string::npos) {
                emit_text(src_.substr(pos_));
                advance_to(src_.size());
                break;
            }
            const char kind = src_[start + 1];  // '{' variable, '%' block, '#' comment
            const char sign = start + 2 < src_.size() && (src_[start + 2] == '-' || src_[start + 2] == '+')
                                  ? src_[start + 2]
                                  : '\0';
            emit_text(control_whitespace(src_.substr(pos_, start - pos_), kind, sign));
            advance_to(start);
            const int tag_line = line_;
            advance_to(start + 2 + (sign ? 1 : 0));
            if (kind == '#') {
                skip_comment(tag_line);
            } else {
                if (kind == '%') reject_raw(tag_line);
                lex_tag(kind == '{', tag_line);
            }
        }
        tokens_.push_back(Token{TokenKind::end, "", line_, 0, 0});
        return std::move(tokens_);
    }

private:
    template <class... Args>
    [[noreturn]] void fail(int line, fmt::format_string<Args...> format, Args&&... args) {
        throw InputError(fmt::format("{}:{}: {}", origin_, line, fmt::format(format, std::forward<Args>(args)...)));
    }

    bool at(size_t pos, std::string_view s) const { return src_.compare(pos, s.size(), s) == 0; }

    void advance_to(size_t pos) {
        for (size_t i = pos_; i < pos; ++i) line_ += src_[i] == '\n';
        pos_ = pos;
    }

    size_t find_tag_start() const {
        for (size_t i = src_.find('{', pos_); i != std::string::npos; i = src_.find('{', i + 1)) {
            if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
        }
        return std::string::npos;
    }

    // The text before a tag, after the tag's `-` or lstrip_blocks has had its say.
    std::string control_whitespace(std::string_view text, char kind, char sign) const {
        if (sign == '-') return pystr::strip(text, std::nullopt, false, true);
        if (sign == '+' || kind == '{') return std::string(text);
        const size_t newline = text.rfind('\n');
        const size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
        const bool line_starting = pos_ == 0 || src_[pos_ - 1] == '\n';
        if (line_start == 0 && !line_starting) return std::string(text);
        const std::string_view tail = text.substr(line_start);
        if (!tail.empty() && pystr::space_run(tail, 0) == tail.size()) return std::string(text.substr(0, line_start));
        return std::string(text);
    }

    void emit_text(std::string text) {
        if (!text.empty()) tokens_.push_back(Token{TokenKind::text, std::move(text), line_, 0, 0});
    }

    void emit(TokenKind kind, std::string text, int line) {
        tokens_.push_back(Token{kind, std::move(text), line, 0, 0});
    }

    void skip_comment(int tag_line) {
        for (size_t i = pos_; i + 1 < src_.size(); ++i) {
            if (at(i, "+#}")) return advance_to(i + 3);
            if (at(i, "-#}")) return advance_to(i + 3 + pystr::space_run(src_, i + 3));
            if (at(i, "#}")) return advance_to(i + 2 + (at(i + 2, "\n") ? 1 : 0));
        }
        fail(tag_line, "unterminated comment: '{{#' without a closing '#}}'");
    }

    void reject_raw(int tag_line) {
        size_t i = pos_ + pystr::space_run(src_, pos_);
        if (at(i, "raw") && (i + 3 >= src_.size() || !is_name_char(src_[i + 3]))) {
            fail(tag_line, "'{{% raw %}}' blocks are not supported by tpserve's chat templates");
        }
    }

    // Tokens of one {{ ... }} or {% ... %} up to and including its end.
    void lex_tag(bool variable, int tag_line) {
        emit(variable ? TokenKind::variable_begin : TokenKind::block_begin, variable ? "{{" : "{%", tag_line);
        std::string closers;  // brackets still open, as the characters that close them
        while (true) {
            if (pos_ >= src_.size()) {
                fail(tag_line, "unterminated '{}': the template ends before its '{}'", variable ? "{{" : "{%",
                     variable ? "}}" : "%}");
            }
            if (closers.empty() && lex_tag_end(variable)) return;
            const char c = src_[pos_];
            if (const size_t spaces = pystr::space_run(src_, pos_)) {
                advance_to(pos_ + spaces);
            } else if (is_digit(c)) {
                lex_number();
            } else if (is_name_start(c)) {
                size_t end = pos_ + 1;
                while (end < src_.size() && is_name_char(src_[end])) ++end;
                emit(TokenKind::name, src_.substr(pos_, end - pos_), line_);
                advance_to(end);
            } else if (c == '\'' || c == '"') {
                lex_string(c);
            } else {
                lex_operator(closers);
            }
        }
    }

    bool lex_tag_end(bool variable) {
        const int line = line_;
        const auto finish = [&](size_t end) {
            advance_to(end);
            emit(variable ? TokenKind::variable_end : TokenKind::block_end, variable ? "}}" : "%}", line);
            return true;
        };
        if (variable) {
            if (at(pos_, "-}}")) return finish(pos_ + 3 + pystr::space_run(src_, pos_ + 3));
            if (at(pos_, "}}")) return finish(pos_ + 2);
            return false;
        }
        if (at(pos_, "+%}")) return finish(pos_ + 3);
        if (at(pos_, "-%}")) return finish(pos_ + 3 + pystr::space_run(src_, pos_ + 3));
        if (at(pos_, "%}")) return finish(pos_ + 2 + (at(pos_ + 2, "\n") ? 1 : 0));  // trim_blocks
        return false;
    }

    // Digits with single underscores between them; returns the end, appending the digits to `out`.
    size_t scan_digits(size_t pos, std::string& out) const {
        while (pos < src_.size()) {
            if (is_digit(src_[pos])) {
                out += src_[pos++];
            } else if (src_[pos] == '_' && pos + 1 < src_.size() && is_digit(src_[pos + 1]) && !out.empty()) {
                ++pos;
            } else {
                break;
            }
        }
        return pos;
    }

    void lex_number() {
        std::string digits;
        size_t end = scan_digits(pos_, digits);
        bool is_float = false;
        const bool after_dot = pos_ > 0 && src_[pos_ - 1] == '.';  // x.0.1 is two subscripts, not a float
        if (!after_dot) {
            if (end + 1 < src_.size() && src_[end] == '.' && is_digit(src_[end + 1])) {
                digits += '.';
                end = scan_digits(end + 1, digits);
                is_float = true;
            }
            if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
                size_t e = end + 1;
                std::string exponent = "e";
                if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) exponent += src_[e++];
                if (e < src_.size() && is_digit(src_[e])) {
                    std::string exp_digits;
                    end = scan_digits(e, exp_digits);
                    digits += exponent + exp_digits;
                    is_float = true;
                }
            }
        }
        Token t{is_float ? TokenKind::floating : TokenKind::integer, digits, line_, 0, 0};
        const char* first = digits.data();
        const char* last = digits.data() + digits.size();
        const auto result =
            is_float ? std::from_chars(first, last, t.floating) : std::from_chars(first, last, t.integer);
        if (result.ec != std::errc{}) fail(line_, "the number {} is out of range", digits);
        tokens_.push_back(std::move(t));
        advance_to(end);
    }

    // A quoted string with Python's escapes (jinja2 decodes it with "unicode-escape").
    void lex_string(char quote) {
        const int line = line_;
        std::string value;
        size_t i = pos_ + 1;
        while (true) {
            if (i >= src_.size()) fail(line, "unterminated string literal");
            const char c = src_[i];
            if (c == quote) break;
            if (c != '\\') {
                value += c;
                ++i;
                continue;
            }
            if (i + 1 >= src_.size()) fail(line, "unterminated string literal");
            const char e = src_[i + 1];
            i += 2;
            switch (e) {
                case '\n': break;  // line continuation
                case '\\': value += '\\'; break;
                case '\'': value += '\''; break;
                case '"': value += '"'; break;
                case 'a': value += '\a'; break;
                case 'b': value += '\b'; break;
                case 'f': value += '\f'; break;
                case 'n': value += '\n'; break;
                case 'r': value += '\r'; break;
                case 't': value += '\t'; break;
                case 'v': value += '\v'; break;
                case 'x': case 'u': case 'U': {
                    const int width = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                    char32_t cp = 0;
                    for (int k = 0; k < width; ++k, ++i) {
                        const int h = i < src_.size() ? hex_value(src_[i]) : -1;
                        if (h < 0) fail(line, "truncated \\{} escape in a string literal", e);
                        cp = cp * 16 + static_cast<char32_t>(h);
                    }
                    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                        fail(line, "the escape \\{} in a string literal is not a valid character", e);
                    }
                    pystr::append_utf8(value, cp);
                    break;
                }
                case 'N': fail(line, "\\N{{...}} escapes are not supported by tpserve's chat templates");
                default:
                    if (e >= '0' && e <= '7') {  // up to three octal digits
                        char32_t cp = static_cast<char32_t>(e - '0');
                        for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k, ++i) {
                            cp = cp * 8 + static_cast<char32_t>(src_[i] - '0');
                        }
                        pystr::append_utf8(value, cp);
                    } else {
                        value += '\\';
                        value += e;
                    }
            }
        }
        emit(TokenKind::string, std::move(value), line);
        advance_to(i + 1);
    }

    void lex_operator(std::string& closers) {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
        for (const auto op : kTwo) {
            if (at(pos_, op)) {
                emit(TokenKind::op, std::string(op), line_);
                return advance_to(pos_ + 2);
            }
        }
        const char c = src_[pos_];
        if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
            if (static_cast<unsigned char>(c) >= 0x80) fail(line_, "unexpected non-ASCII character in a tag");
            fail(line_, "unexpected character '{}'", c);
        }
        if (c == '(' || c == '[' || c == '{') {
            closers += c == '(' ? ')' : c == '[' ? ']' : '}';
        } else if (c == ')' || c == ']' || c == '}') {
            if (closers.empty()) fail(line_, "unexpected '{}'", c);
            if (closers.back() != c) fail(line_, "unexpected '{}', expected '{}'", c, closers.back());
            closers.pop_back();
        }
        emit(TokenKind::op, std::string(1, c), line_);
        advance_to(pos_ + 1);
    }

    std::string src_;
    const std::string& origin_;
    size_t pos_ = 0;
    int line_ = 1;
    std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const std::string& origin) {
    return Lexer(source, origin).run();
}

}  // namespace tps::chat
