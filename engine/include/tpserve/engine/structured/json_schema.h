// JSON as a grammar: any JSON value or object (response_format json_object), and the JSON texts a
// JSON Schema admits (json_schema, guided_json, tool arguments).
//
// The text is JSON as a model writes it: whitespace between tokens is free but bounded (nothing,
// one space, or a newline and up to 20 spaces or tabs, as llama.cpp's grammars allow), so a model
// cannot fill its output with blanks; numbers have at most 16 integer digits, 16 fraction digits
// and 3 exponent digits, so every number ends.
//
// Schemas: type (one or a list), enum and const (only a type beside them), anyOf, oneOf (as
// anyOf), allOf of one schema, $ref to "#", "#/$defs/..." or "#/definitions/..." (recursion
// allowed); objects: properties (written in the schema's order), required, additionalProperties
// (false, true or a schema); arrays: items, prefixItems, minItems, maxItems; strings: minLength,
// maxLength, pattern (regex_grammar.h, a full match), format date, time, date-time and uuid;
// integers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (int_range.h; on numbers they
// are refused). An object schema with properties admits no other property unless
// additionalProperties says so (OpenAI's strict mode and xgrammar's); one without properties
// admits any; extra keys beside listed ones are none of their names. Annotations (title,
// description, default, examples, $comment, ...) and "x-" keywords are ignored. Any other keyword
// (multipleOf, uniqueItems, not, if, patternProperties, ...) is refused with a UsageError naming
// it and where it is: a constraint that cannot be enforced is not silently dropped.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <string_view>

namespace tps::structured {

// A rule for any JSON value, and one for any JSON object.
RuleId add_json_value(GrammarBuilder& g);
RuleId add_json_object(GrammarBuilder& g);
// A rule for the JSON texts valid under `schema` (JSON text of a schema). UsageError for a schema
// that is not JSON, not a schema, or uses what is not supported (the keyword and its path named).
RuleId add_json_schema(GrammarBuilder& g, std::string_view schema);

}  // namespace tps::structured
