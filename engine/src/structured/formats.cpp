#include "tpserve/engine/structured/formats.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/structured/json_schema.h"
#include "tpserve/engine/structured/regex_grammar.h"

namespace tps::structured {

std::shared_ptr<const CompiledGrammar> json_object_grammar() {
    // the same for every request: compiled once
    static const std::shared_ptr<const CompiledGrammar> grammar = [] {
        GrammarBuilder g;
        return g.compile(add_json_object(g));
    }();
    return grammar;
}

std::shared_ptr<const CompiledGrammar> json_schema_grammar(std::string_view schema) {
    GrammarBuilder g;
    return g.compile(add_json_schema(g, schema));
}

std::shared_ptr<const CompiledGrammar> regex_grammar(std::string_view pattern) {
    TPS_CHECK_AS(UsageError, pattern.size() <= kMaxPatternBytes, "the regular expression has {} bytes, more than the {} supported",
                 pattern.size(), kMaxPatternBytes);
    GrammarBuilder g;
    return g.compile(add_regex(g, pattern));
}

std::shared_ptr<const CompiledGrammar> choice_grammar(std::span<const std::string> choices) {
    TPS_CHECK_AS(UsageError, !choices.empty(), "the list of choices is empty");
    GrammarBuilder g;
    std::vector<RuleId> rules;
    for (const std::string& c : choices) {
        TPS_CHECK_AS(UsageError, !c.empty(), "a choice is the empty string");
        rules.push_back(g.literal(c, "choice"));
    }
    return g.compile(g.choice(rules, "choices"));
}

}  // namespace tps::structured
