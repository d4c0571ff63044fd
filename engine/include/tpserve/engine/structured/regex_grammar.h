// Regular expressions (vLLM's guided_regex, JSON Schema "pattern") compiled into grammar rules.
// The dialect is the common part of Python `re` and ECMAScript; where the two differ, Python wins
// (a `{` that starts no quantifier is a literal, `{,n}` means `{0,n}`, `.` refuses only "\n").
// Only what a grammar can say is accepted: a construct that needs more (backreferences,
// lookaround, word boundaries, flags) is an error naming it, never silently approximated.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <string_view>

namespace tps::structured {

// Adds to `g` a rule that matches exactly the strings the whole pattern matches (a full match, as
// Python's re.fullmatch: a leading ^ and a trailing $ are accepted and mean nothing more), and
// returns it. The pattern is UTF-8 and so is the text the rule admits. Each rule it makes matches ""
// in at most one way, so ambiguity such as (|)(|)... or (a?|b?)(a?|b?)... costs the matcher a few
// readings per group, not a number that doubles with each.
//
// Supported:
//   literals (a non-ASCII character matches its UTF-8 bytes), `.` (any character but "\n"),
//   \d \D \w \W \s \S with their ASCII meanings (\D \W \S take every other character, non-ASCII
//   included), \t \n \r \f \v \0 (not followed by a digit), \xHH, \uHHHH (a surrogate pair of
//   two makes one character), \u{H...}, a backslash before any character that is not an ASCII
//   letter or digit; classes [...] and [^...] with ranges, those escapes and \b (backspace), a `]`
//   first and a `-` first or last taken literally; groups (...), (?:...), (?<name>...),
//   (?P<name>...); alternation with empty branches; * + ? {n} {n,} {,m} {n,m} and their lazy
//   forms (same language); ^ as the first character, $ as the last.
// Refused, with tps::UsageError naming the construct and its byte offset in the pattern:
//   backreferences, lookaround, \b \B \A \Z \z and other anchors, inline flags and other (?...)
//   extensions, possessive quantifiers, \p{...}, ^ or $ anywhere else, malformed syntax
//   (unbalanced parentheses, a quantifier with nothing to repeat, an unterminated or empty class,
//   a range the wrong way round, {n,m} with m < n), counts above GrammarBuilder::kMaxRepeat, a
//   class that admits no character, groups nested deeper than kMaxRegexNesting, invalid UTF-8.
RuleId add_regex(GrammarBuilder& g, std::string_view pattern);

// How deep groups may nest: the compiler recurses once per level.
inline constexpr int kMaxRegexNesting = 200;

}  // namespace tps::structured
