// The parser's cursor over the lexer's tokens: look at the current token, step, expect a kind or an
// operator, and fail with tps::InputError "<origin>:<line>: ..." describing what was found instead.
#pragma once

#include "lexer.h"

#include "tpserve/common/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tps::chat {

class TokenStream {
public:
    TokenStream(std::vector<Token> tokens, const std::string& origin) : tokens_(std::move(tokens)), origin_(origin) {}

    const Token& cur() const { return tokens_[pos_]; }
    const Token& look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
    // Steps past the current token (never past the end token) and returns it.
    const Token& next() {
        const Token& t = tokens_[pos_];
        if (pos_ + 1 < tokens_.size()) ++pos_;
        return t;
    }
    bool is_op(std::string_view op) const { return cur().kind == TokenKind::op && cur().text == op; }
    bool is_name(std::string_view name) const { return cur().kind == TokenKind::name && cur().text == name; }
    bool look_is_op(std::string_view op) const { return look().kind == TokenKind::op && look().text == op; }
    bool skip_op(std::string_view op) { return is_op(op) ? (next(), true) : false; }
    bool skip_name(std::string_view name) { return is_name(name) ? (next(), true) : false; }

    template <class... Args>
    [[noreturn]] void fail(int line, fmt::format_string<Args...> format, Args&&... args) const {
        throw InputError(fmt::format("{}:{}: {}", origin_, line, fmt::format(format, std::forward<Args>(args)...)));
    }

    static std::string describe(const Token& t) {
        switch (t.kind) {
            case TokenKind::text: return "template text";
            case TokenKind::variable_begin: return "'{{'";
            case TokenKind::variable_end: return "'}}'";
            case TokenKind::block_begin: return "'{%'";
            case TokenKind::block_end: return "'%}'";
            case TokenKind::name:
            case TokenKind::op: return fmt::format("'{}'", t.text);
            case TokenKind::string: return "a string";
            case TokenKind::integer:
            case TokenKind::floating: return "a number";
            case TokenKind::end: return "the end of the template";
        }
        return "a token";
    }

    void expect(TokenKind kind, std::string_view what) {
        if (cur().kind != kind) fail(cur().line, "expected {}, got {}", what, describe(cur()));
        next();
    }
    void expect_op(std::string_view op) {
        if (!is_op(op)) fail(cur().line, "expected '{}', got {}", op, describe(cur()));
        next();
    }
    std::string expect_name(std::string_view what) {
        if (cur().kind != TokenKind::name) fail(cur().line, "expected {}, got {}", what, describe(cur()));
        return next().text;
    }

private:
    std::vector<Token> tokens_;
    const std::string& origin_;
    size_t pos_ = 0;
};

}  // namespace tps::chat
