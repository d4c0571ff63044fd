// Tokenizer of the chat-template interpreter. It applies jinja2's whitespace rules the way
// transformers configures them (trim_blocks, lstrip_blocks, `-` and `+` markers), so the parser
// sees text exactly as jinja2 would emit it, and comments never leave the lexer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tps::chat {

enum class TokenKind {
    text,            // template data, whitespace control already applied
    variable_begin,  // {{
    variable_end,    // }}
    block_begin,     // {%
    block_end,       // %}
    name,
    string,          // text holds the decoded value
    integer,
    floating,
    op,              // text holds the operator: + - * / // % ** ~ == != < <= > >= = . : | , ( ) [ ] { }
    end,             // end of the template
};

struct Token {
    TokenKind kind = TokenKind::end;
    std::string text;
    int line = 1;
    int64_t integer = 0;
    double floating = 0;
};

// Throws tps::InputError "<origin>:<line>: ..." for an unterminated tag, comment or string, an
// unexpected character or bracket, and for constructs the interpreter does not support ({% raw %}).
std::vector<Token> tokenize(std::string_view source, const std::string& origin);

}  // namespace tps::chat
