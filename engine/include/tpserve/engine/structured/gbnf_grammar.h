// GBNF grammars (llama.cpp's grammars/README.md format; what llama.cpp's server `grammar` field and
// vLLM's `guided_grammar` accept) compiled into a byte-level grammar (grammar.h). Rules may be
// written in any order and span lines: a rule ends where the next `name ::=` begins.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <cstddef>
#include <memory>
#include <string_view>

namespace tps::structured {

// The grammar of a GBNF text; its rule `root` is the start.
//
// Supported: rules `name ::= alternatives` (names of letters, digits, '-' and '_'), `#` comments,
// newlines as whitespace anywhere; string literals "..." and classes [...] / [^...] with ranges,
// both with the escapes \n \r \t \\ \" \[ \] \xHH \uHHHH \UHHHHHHHH (each a code point, written
// as UTF-8: "\xFF" is U+00FF); a '-' last in a class is itself; `.` (any one character, newline
// included); groups ( ), alternation |, postfix * + ? {m} {m,} {m,n} (chained postfixes apply in
// turn); references to rules defined anywhere in the text. A repetition of something that can
// match "" is rewritten to an equivalent one that is not left-recursive.
//
// Refused with tps::UsageError, the message starting "GBNF: " and naming the line and column
// (1-based; columns count characters) and the problem: an undefined rule, a rule defined twice,
// no rule `root`, an unterminated string, class or group, an unknown or malformed escape (and
// escapes of surrogates or past U+10FFFF), a class that admits no character, a range the wrong way
// round, {m,n} with n < m, counts above GrammarBuilder::kMaxRepeat, groups and postfixes nested
// deeper than kMaxGbnfNesting, stray characters, invalid UTF-8. Texts over kMaxGbnfBytes and
// left recursion (`expr ::= expr "+" term`, reported by GrammarBuilder::compile naming the rule)
// are refused without a position.
std::shared_ptr<const CompiledGrammar> gbnf_grammar(std::string_view text);
// The same rules added to `g` (as part of a larger grammar): its `root` rule. Left recursion is
// found by g.compile(), without the "GBNF: " mark.
RuleId add_gbnf(GrammarBuilder& g, std::string_view text);

inline constexpr size_t kMaxGbnfBytes = 65536;  // larger texts are refused
inline constexpr int kMaxGbnfNesting = 200;     // the parser recurses once per group level

}  // namespace tps::structured
