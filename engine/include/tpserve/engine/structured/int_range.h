// Integers between two bounds as a grammar (JSON Schema's minimum / maximum on an integer): the
// decimal numerals without leading zeros, "-" before a negative one, "-0" never, whose values
// lie in [lo, hi]. A missing bound is open, up to 16 digits, as any JSON integer here
// (json_schema.h). The numerals are split by length and then digit by digit, so the grammar has
// a few rules per digit of the bounds.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <cstdint>
#include <optional>

namespace tps::structured {

// UsageError when lo > hi.
RuleId add_int_range(GrammarBuilder& g, std::optional<int64_t> lo, std::optional<int64_t> hi);

}  // namespace tps::structured
