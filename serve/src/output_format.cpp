// What a request asks its output to look like, as a grammar the sampler follows token by token:
// OpenAI's response_format (json_object, json_schema), vLLM's guided_json, guided_regex,
// guided_choice and guided_grammar (GBNF, as llama.cpp's), and vLLM's newer structured_outputs
// object with the same choices. A format that cannot be enforced is refused, never ignored.
#include "request_fields.h"

#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/gbnf_grammar.h"
#include "tpserve/engine/structured/grammar_constraint.h"
#include "tpserve/engine/structured/json_schema.h"
#include "tpserve/engine/structured/structural_tag.h"
#include "tpserve/serve/reasoning.h"

#include <fmt/format.h>

#include <functional>

namespace tps::serve {
namespace {

using structured::CompiledGrammar;
using Compile = std::function<std::shared_ptr<const CompiledGrammar>()>;

// A schema given as an object, or as its JSON text (vLLM takes both)
std::string schema_text(const Json& v, const std::string& param) {
    if (v.is_object() || v.is_boolean()) return v.dump();
    if (v.is_string()) return v.get<std::string>();
    throw ApiError::invalid(fmt::format("'{}' must be a JSON schema (an object), got {}", param, type_name(v)), param);
}

std::vector<std::string> choice_list(const Json& v, const std::string& param) {
    if (!v.is_array() || v.empty()) throw ApiError::invalid(fmt::format("'{}' must be a non-empty array of strings", param), param);
    std::vector<std::string> out;
    for (const Json& c : v) {
        if (!c.is_string()) throw ApiError::invalid(fmt::format("'{}' must hold strings, got {}", param, type_name(c)), param);
        out.push_back(c.get<std::string>());
    }
    return out;
}

// A regular expression's or a GBNF grammar's text
std::string text_of(const Json& v, const std::string& param) {
    if (!v.is_string()) throw ApiError::invalid(fmt::format("'{}' must be a string, got {}", param, type_name(v)), param);
    return v.get<std::string>();
}

// OpenAI's response_format: text, json_object, or json_schema {name, schema, strict}; vLLM's
// structural_tag (structural_tag.h)
std::optional<Compile> response_format(const Json& rf) {
    const Json* type = rf.is_object() ? field(rf, "type") : nullptr;
    if (!type || !type->is_string()) throw ApiError::invalid("'response_format' must be an object with a string 'type'", "response_format");
    const std::string t = type->get<std::string>();
    if (t == "text") return std::nullopt;
    if (t == "json_object") return Compile(structured::json_object_grammar);
    if (t == "json_schema") {
        const Json* js = field(rf, "json_schema");
        if (!js || !js->is_object()) {
            throw ApiError::invalid("'response_format' of type 'json_schema' needs a 'json_schema' object", "response_format");
        }
        const Json* schema = field(*js, "schema");
        if (!schema) throw ApiError::invalid("'response_format.json_schema' needs its 'schema'", "response_format");
        std::string text = schema_text(*schema, "response_format.json_schema.schema");
        return Compile([text] { return structured::json_schema_grammar(text); });
    }
    if (t == "structural_tag") {
        std::string text = rf.dump();  // ({"format": ...}, or vLLM's {"structures", "triggers"})
        return Compile([text] { return structured::structural_tag_grammar(text); });
    }
    throw ApiError::invalid(
        fmt::format("'response_format' type '{}' is not supported (text, json_object, json_schema and structural_tag are)", t),
        "response_format");
}

// vLLM's structured_outputs: {"json": ...} or {"regex": ...} or {"choice": [...]} or {"grammar": "..."}
// or {"json_object": true} or {"structural_tag": "..."}
std::vector<std::pair<std::string, Compile>> structured_outputs(const Json& so) {
    if (!so.is_object()) throw ApiError::invalid(fmt::format("'structured_outputs' must be an object, got {}", type_name(so)), "structured_outputs");
    std::vector<std::pair<std::string, Compile>> out;
    for (const auto& [key, v] : so.items()) {
        if (v.is_null()) continue;
        const std::string param = "structured_outputs." + key;
        if (key == "json") {
            std::string text = schema_text(v, param);
            out.emplace_back(param, [text] { return structured::json_schema_grammar(text); });
        } else if (key == "regex") {
            std::string text = text_of(v, param);
            out.emplace_back(param, [text] { return structured::regex_grammar(text); });
        } else if (key == "grammar") {
            std::string text = text_of(v, param);
            out.emplace_back(param, [text] { return structured::gbnf_grammar(text); });
        } else if (key == "choice") {
            std::vector<std::string> list = choice_list(v, param);
            out.emplace_back(param, [list] { return structured::choice_grammar(list); });
        } else if (key == "json_object") {
            if (!v.is_boolean()) throw ApiError::invalid(fmt::format("'{}' must be a boolean", param), param);
            if (v.get<bool>()) out.emplace_back(param, Compile(structured::json_object_grammar));
        } else if (key == "structural_tag") {
            // (vLLM takes the object's JSON text; the object itself is taken too)
            if (!v.is_string() && !v.is_object()) {
                throw ApiError::invalid(fmt::format("'{}' must be a structural tag object or its JSON text, got {}", param, type_name(v)),
                                        param);
            }
            std::string text = v.is_string() ? v.get<std::string>() : v.dump();
            out.emplace_back(param, [text] { return structured::structural_tag_grammar(text); });
        } else if (key != "disable_any_whitespace" && key != "disable_fallback" && key != "disable_additional_properties" &&
                   key != "whitespace_pattern" && key != "backend") {
            throw ApiError::invalid(fmt::format("'{}' is not a field of 'structured_outputs'", param), param);
        } else if (key == "whitespace_pattern") {
            throw ApiError::invalid(fmt::format("'{}' is not supported (whitespace is fixed: see docs/api.md)", param), param);
        }
    }
    return out;
}

}  // namespace

namespace {

void constrain(std::shared_ptr<const CompiledGrammar> grammar, const std::string& param, const ServedModel& model,
               GenerationRequest& r) {
    if (!model.token_bytes) throw ApiError::invalid("structured output is not available on this server", param);
    auto tokens = std::make_shared<structured::GrammarTokens>(std::move(grammar), model.token_bytes, r.stop_ids);
    try {
        // (the start state; a reasoning model's thoughts come first, free)
        r.sampling.constraint = r.thinks ? structured::make_grammar_after(std::string(kThinkEnd), std::move(tokens))
                                         : structured::make_grammar_constraint(std::move(tokens));
    } catch (const UsageError& e) {
        throw ApiError::invalid(fmt::format("'{}': {}", param, e.what()), param);
    }
}

using B = structured::GrammarBuilder;
using structured::RuleId;

// One call in the model's own JSON: {"name": <a function>, <args_key>: <its parameters' schema, or
// any object>}. Every function's schema is held with `hold_all` (forced calls), else only a strict
// one's; `only` (not empty): that function alone.
RuleId add_call(B& g, const Json& tools, const std::string& only, const char* args_key, bool hold_all) {
    std::vector<RuleId> calls;
    for (const Json& t : tools) {
        const Json& fn = t["function"];
        if (!only.empty() && fn["name"] != only) continue;
        const Json* strict = field(fn, "strict");
        const Json* params = field(fn, "parameters");
        const bool held = params && (hold_all || (strict && strict->is_boolean() && strict->get<bool>()));
        const Json call = {{"type", "object"},
                           {"properties", {{"name", {{"const", fn["name"]}}}, {args_key, held ? *params : Json{{"type", "object"}}}}},
                           {"required", Json::array({"name", args_key})}};
        try {
            calls.push_back(structured::add_json_schema(g, call.dump()));
        } catch (const UsageError& e) {
            throw ApiError::invalid(fmt::format("'tools': the parameters of '{}' cannot be enforced: {}", fn["name"].get<std::string>(), e.what()),
                                    "tools");
        }
    }
    return g.choice(calls);
}

// Hermes' (Qwen's) call after its <tool_call>: the JSON, blank lines allowed around it, </tool_call>.
RuleId add_hermes_body(B& g, RuleId call) {
    const RuleId blank = g.optional(g.literal("\n"));
    return g.sequence({B::ref(blank), B::ref(call), B::ref(blank), B::ref(g.literal("</tool_call>"))});
}

// Any blanks (spaces, tabs, line ends).
RuleId add_blanks(B& g) {
    const structured::CodePointRange blanks[] = {{'\t', '\n'}, {'\r', '\r'}, {' ', ' '}};
    return g.star(g.code_points(blanks, "blank"));
}

// Llama 3.1's: calls separated by ';' (one with `one`), `space` (add_blanks) around them.
RuleId add_llama_calls(B& g, RuleId call, bool one, RuleId space) {
    const RuleId next = g.sequence({B::ref(space), B::byte(';'), B::ref(space), B::ref(call)});
    const RuleId more = one ? g.sequence({}) : g.star(next);
    return g.sequence({B::ref(space), B::ref(call), B::ref(more), B::ref(space)});
}

// The grammar of calls, compiled (a schema with no finite instance is the request's fault).
std::shared_ptr<const CompiledGrammar> compiled_calls(const B& g, RuleId root) {
    try {
        return g.compile(root);
    } catch (const UsageError& e) {
        throw ApiError::invalid(fmt::format("'tools': the calls cannot be enforced: {}", e.what()), "tools");
    }
}

}  // namespace

void force_tool_calls(const Json& tools, const std::string& only, const ServedModel& model, GenerationRequest& r) {
    if (r.sampling.constraint) {
        throw ApiError::invalid("'tool_choice' that forces a call and an output format cannot go together", "tool_choice");
    }
    const bool one = !only.empty() || r.one_tool_call;
    const ToolParser p = model.tool_parser;
    if ((p == ToolParser::hermes || p == ToolParser::llama3_json || p == ToolParser::mistral) && model.token_bytes) {
        // in the model's own format, which it was trained to write (as vLLM's structural tags do):
        // the output is calls and nothing else, read back by the model's parser
        B g;
        const RuleId call = add_call(g, tools, only, p == ToolParser::llama3_json ? "parameters" : "arguments", true);
        RuleId calls = 0;
        if (p == ToolParser::hermes) {
            const RuleId tagged = g.sequence({B::ref(g.literal("<tool_call>")), B::ref(add_hermes_body(g, call))});
            const RuleId next = g.sequence({B::ref(g.optional(g.literal("\n"))), B::ref(tagged)});
            calls = one ? tagged : g.sequence({B::ref(tagged), B::ref(g.star(next))});
        } else if (p == ToolParser::mistral) {
            // Mistral's list, [{"name": ..., "arguments": {...}}, ...], without the [TOOL_CALLS]
            // token before it (a grammar spells text, not special tokens; the parser reads either)
            const RuleId space = add_blanks(g);
            const RuleId next = g.sequence({B::ref(space), B::byte(','), B::ref(space), B::ref(call)});
            calls = g.sequence({B::byte('['), B::ref(space), B::ref(call), B::ref(one ? g.sequence({}) : g.star(next)),
                                B::ref(space), B::byte(']')});
        } else {
            calls = add_llama_calls(g, call, one, add_blanks(g));
        }
        constrain(compiled_calls(g, calls), "tool_choice", model, r);
        r.reads_tool_calls = true;
        return;
    }
    // vLLM's schema for forced calls elsewhere: a list of {"name": <one of the functions>, "parameters": <its schema>}
    Json alternatives = Json::array();
    for (const Json& t : tools) {
        const Json& fn = t["function"];
        const std::string name = fn["name"].get<std::string>();
        if (!only.empty() && name != only) continue;
        const auto params = fn.find("parameters");
        Json call = {{"type", "object"},
                     {"properties", {{"name", {{"const", name}}},
                                     {"parameters", params == fn.end() || params->is_null() ? Json{{"type", "object"}} : *params}}},
                     {"required", Json::array({"name", "parameters"})}};
        alternatives.push_back(std::move(call));
    }
    Json list = {{"type", "array"}, {"items", {{"anyOf", std::move(alternatives)}}}, {"minItems", 1}};
    if (one) list["maxItems"] = 1;
    std::shared_ptr<const CompiledGrammar> grammar;
    try {
        grammar = structured::json_schema_grammar(list.dump());
    } catch (const UsageError& e) {
        throw ApiError::invalid(fmt::format("'tools': a function's parameters cannot be enforced: {}", e.what()), "tools");
    }
    constrain(std::move(grammar), "tool_choice", model, r);
    r.forces_tool_calls = true;
}

bool any_strict(const Json& tools) {
    return std::any_of(tools.begin(), tools.end(), [](const Json& t) {
        const Json* strict = field(t["function"], "strict");
        return strict && strict->is_boolean() && strict->get<bool>();
    });
}

void strict_tool_calls(const Json& tools, const ServedModel& model, GenerationRequest& r) {
    const ToolParser p = model.tool_parser;
    if (p != ToolParser::hermes && p != ToolParser::llama3_json) {
        throw ApiError::invalid(fmt::format("'strict' function calling with tool_choice \"auto\" is enforced for models whose calls "
                                            "are read as hermes or llama3_json; this model's are read as {}: drop 'strict', or "
                                            "force the calls with tool_choice \"required\"",
                                            tool_parser_name(p)),
                                "tools");
    }
    if (r.sampling.constraint) {
        throw ApiError::invalid("'strict' function calling and an output format cannot go together", "tools");
    }
    if (!model.token_bytes) throw ApiError::invalid("strict function calling is not available on this server", "tools");
    B g;
    const RuleId call = add_call(g, tools, {}, p == ToolParser::hermes ? "arguments" : "parameters", false);
    if (p == ToolParser::hermes) {
        // between the tags; the text around them free (a reasoning model's calls come after its
        // thoughts: a tag within them is thought)
        auto tokens = std::make_shared<structured::GrammarTokens>(compiled_calls(g, add_hermes_body(g, call)), model.token_bytes, r.stop_ids);
        // (parallel_tool_calls false: the output ends with its one call)
        r.sampling.constraint = structured::make_grammar_on("<tool_call>", std::move(tokens), r.thinks ? std::string(kThinkEnd) : std::string(),
                                                            r.one_tool_call);
        return;
    }
    // llama3_json: the answer is calls separated by ';', or text that does not open with '{'
    const structured::CodePointRange not_first[] = {{'\t', '\n'}, {'\r', '\r'}, {' ', ' '}, {'{', '{'}};
    const RuleId space = add_blanks(g);
    const RuleId text = g.sequence({B::ref(space), B::ref(g.code_points_except(not_first, "text")), B::ref(g.star(g.code_points_except({}, "char")))});
    const RuleId answer[] = {add_llama_calls(g, call, r.one_tool_call, space), text, space};
    constrain(compiled_calls(g, g.choice(answer)), "tools", model, r);
}

void parse_output_format(const Json& j, const ServedModel& model, GenerationRequest& r) {
    std::vector<std::pair<std::string, Compile>> asked;
    if (const Json* rf = field(j, "response_format")) {
        if (auto c = response_format(*rf)) asked.emplace_back("response_format", std::move(*c));
    }
    if (const Json* v = field(j, "guided_json")) {
        std::string text = schema_text(*v, "guided_json");
        asked.emplace_back("guided_json", [text] { return structured::json_schema_grammar(text); });
    }
    if (const Json* v = field(j, "guided_regex")) {
        std::string text = text_of(*v, "guided_regex");
        asked.emplace_back("guided_regex", [text] { return structured::regex_grammar(text); });
    }
    if (const Json* v = field(j, "guided_choice")) {
        std::vector<std::string> list = choice_list(*v, "guided_choice");
        asked.emplace_back("guided_choice", [list] { return structured::choice_grammar(list); });
    }
    if (const Json* v = field(j, "guided_grammar")) {
        std::string text = text_of(*v, "guided_grammar");
        asked.emplace_back("guided_grammar", [text] { return structured::gbnf_grammar(text); });
    }
    if (field(j, "guided_whitespace_pattern")) {
        throw ApiError::invalid("'guided_whitespace_pattern' is not supported (whitespace is fixed: see docs/api.md)",
                                "guided_whitespace_pattern");
    }
    if (const Json* so = field(j, "structured_outputs")) {
        for (auto& a : structured_outputs(*so)) asked.push_back(std::move(a));
    }
    if (asked.empty()) return;
    if (asked.size() > 1) {
        throw ApiError::invalid(fmt::format("'{}' and '{}' both ask for an output format; give one", asked[0].first, asked[1].first),
                                asked[1].first);
    }
    const auto& [param, compile] = asked[0];
    std::shared_ptr<const CompiledGrammar> grammar;
    try {
        grammar = compile();
    } catch (const UsageError& e) {
        throw ApiError::invalid(fmt::format("'{}': {}", param, e.what()), param);
    }
    constrain(std::move(grammar), param, model, r);
}

}  // namespace tps::serve
