// Structural tags (xgrammar's format, as vLLM's response_format {"type": "structural_tag"} takes
// it): an output described as a tree of formats, mixing free text with structured parts between
// tags, such as a model's own tool-call syntax. Compiled into one byte-level grammar (grammar.h).
//
// Two shapes of the request object:
// - {"type": "structural_tag", "format": <format>} (xgrammar's; "type" may be left out);
// - vLLM's older {"type": "structural_tag", "structures": [{"begin", "schema", "end"}, ...],
//   "triggers": [...]}: free text in which each trigger starts one of the structures whose begin
//   starts with it (begin, JSON valid under its schema, end), as many as the model writes.
//
// Formats (each an object with a "type"; in a "tags" list a format with no type is a tag):
// - const_string {value}: exactly that text. json_schema {json_schema, style "json"}: JSON valid
//   under the schema (json_schema.h). grammar {grammar}: a GBNF grammar's text (gbnf_grammar.h).
//   regex {pattern}: a full match (regex_grammar.h).
// - any_text {excludes}: any text without those strings. Open-ended, as the two below: inside a
//   tag it stops at the first of the tag's end strings; elsewhere it runs to the end of the output.
// - triggered_tags {triggers, tags, at_least_one, stop_after_first, excludes}: free text (without
//   the excludes) in which each trigger, once written, must go on as one of the tags whose begin
//   starts with it; then free text again. at_least_one: it starts with a tag; stop_after_first:
//   it ends after its first tag.
// - tags_with_separator {tags, separator, at_least_one, stop_after_first}: tags separated by the
//   separator, nothing else.
// - sequence {elements}, or {elements}: one after the other, or one of them. optional, star, plus
//   {content}, repeat {content, min, max (-1: no limit)}.
// - tag {begin, content, end}: begin, the content, then the end (a string, or a list of strings
//   any one of which ends it).
// An open-ended format must be the content of a tag with a non-empty end, or come last (in a
// sequence, or in the output); an "or" has open-ended elements only or none. Token-level formats
// (token, exclude_token, any_tokens, token_triggered_tags, token_dispatch), dispatch, the XML
// styles of json_schema and any_text's max_tokens / max_chars are refused.
//
// Refused with tps::UsageError naming where in the object and what is wrong.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <memory>
#include <string_view>

namespace tps::structured {

// The grammar of a structural tag given as the JSON text of its request object (above).
std::shared_ptr<const CompiledGrammar> structural_tag_grammar(std::string_view request_object);

inline constexpr size_t kMaxStructuralTagBytes = 262144;  // larger objects are refused
inline constexpr int kMaxStructuralTagDepth = 64;         // formats nested deeper are refused

}  // namespace tps::structured
