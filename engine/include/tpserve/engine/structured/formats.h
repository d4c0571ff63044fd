// The output formats a request may ask for, each compiled into a grammar: any JSON object
// (OpenAI's response_format json_object), the JSON of a schema (json_schema, vLLM's guided_json),
// a regular expression (guided_regex) and a list of choices (guided_choice). Errors are
// UsageErrors that say what is wrong with the request's format.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace tps::structured {

std::shared_ptr<const CompiledGrammar> json_object_grammar();
std::shared_ptr<const CompiledGrammar> json_schema_grammar(std::string_view schema);
// At most kMaxPatternBytes: matching costs grow with a pattern's optional parts, and matching
// runs on the engine's thread.
std::shared_ptr<const CompiledGrammar> regex_grammar(std::string_view pattern);
inline constexpr size_t kMaxPatternBytes = 4096;
// Exactly one of the strings (at least one, none empty).
std::shared_ptr<const CompiledGrammar> choice_grammar(std::span<const std::string> choices);

}  // namespace tps::structured
