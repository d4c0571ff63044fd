// Parser of the chat-template interpreter: tokens to a syntax tree, following jinja2/parser.py
// (the same operator precedence, the same statement forms). A construct outside the supported
// subset ({% macro %}, an unknown filter, ...) is a tps::InputError naming it and its line.
#pragma once

#include "ast.h"
#include "lexer.h"

#include <string>
#include <vector>

namespace tps::chat {

// The whole template as its root scope, scopes resolved.
Frame parse(std::vector<Token> tokens, const std::string& origin);

}  // namespace tps::chat
