// Renders a parsed chat template: statements write text, expressions are evaluated with Python's
// semantics, and names resolve through jinja2's scopes (a {% set %} inside a for loop lives only in
// that iteration; one inside an if does not). Errors are tps::InputError "<origin>:<line>: <message>".
#pragma once

#include "ast.h"
#include "builtins.h"
#include "value.h"

#include <string>

namespace tps::chat {

// `context` holds the template's variables (messages, add_generation_prompt, bos_token, ...).
std::string render(const Frame& program, const DictData& context, const std::string& origin, const Clock& clock);

}  // namespace tps::chat
