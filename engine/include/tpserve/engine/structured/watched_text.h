// Free text that watches for strings, as grammar rules: the text between the tags of a structural
// tag (structural_tag.h). Some strings may not appear in it, one closes it, one starts a tag. The
// strings are found as they are written, first one first, by an Aho-Corasick automaton over code
// points; each of its states is a rule, so the matcher follows the text deterministically.
#pragma once

#include "tpserve/engine/structured/grammar.h"

#include <optional>
#include <span>
#include <string>

namespace tps::structured {

struct WatchedString {
    enum class Kind { excluded, end, trigger };
    std::string text;  // valid UTF-8, not empty
    Kind kind = Kind::excluded;
    RuleId then = 0;  // a trigger: what must follow it (the rest of its tag)
};

struct WatchedTextOptions {
    // The text may stop anywhere (it runs to the end of the output: no `end` string closes it).
    bool may_stop = false;
    // After a trigger and what follows it the text is over, instead of free again: `after_once`
    // comes next (the enclosing tag's end), or nothing.
    bool once = false;
    std::optional<RuleId> after_once;
};

// Text (valid UTF-8) in which no excluded string appears; the first `end` string (if any) closes
// the rule, itself included; each trigger, as soon as it is written, is followed by its `then` rule,
// then the text goes on (or, with `once`, ends as above). When strings end at the same place, an
// excluded one wins over an end, an end over a trigger, and a longer trigger over its suffix.
// UsageError for an empty string or invalid UTF-8. The rules' size grows with the strings' total
// length times their distinct characters (GrammarBuilder::kMaxElements bounds it).
RuleId add_watched_text(GrammarBuilder& g, std::span<const WatchedString> watched, const WatchedTextOptions& options);

}  // namespace tps::structured
