// Structural tags to grammar rules (structural_tag.h). Each format becomes a rule; the open-ended
// ones (any_text, triggered_tags, tags_with_separator) are told where they stop: at the first of
// the enclosing tag's end strings, which they take in themselves, or at the end of the output.
// The free text between tags is watched_text.h's automaton.
#include "tpserve/engine/structured/structural_tag.h"

#include "tpserve/common/check.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/gbnf_grammar.h"
#include "tpserve/engine/structured/json_schema.h"
#include "tpserve/engine/structured/regex_grammar.h"
#include "tpserve/engine/structured/watched_text.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <vector>

namespace tps::structured {
namespace {

using Json = nlohmann::ordered_json;  // a schema's properties are written in its order

// Where a format is, and where open-ended content may stop.
struct Place {
    std::string path;               // "format.elements[1]", for errors
    int depth = 0;
    std::vector<std::string> ends;  // the enclosing tag's non-empty end strings (the first stops it)
    bool at_output_end = false;     // it may run to the end of the output

    bool open_allowed() const { return !ends.empty() || at_output_end; }
    Place inner(const std::string& name) const { return {path + "." + name, depth + 1, {}, false}; }
    Place item(const std::string& name, size_t i) const { return {fmt::format("{}.{}[{}]", path, name, i), depth + 1, {}, false}; }
};

struct Part {
    RuleId rule = 0;
    bool open = false;  // open-ended: it takes the end string in (or runs to the output's end)
};

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
    throw UsageError(fmt::format("structural tag: {}: {}", path, problem));
}

std::string type_of(const Json& v) {
    if (v.is_object()) return "an object";
    if (v.is_array()) return "an array";
    if (v.is_string()) return "a string";
    if (v.is_boolean()) return "a boolean";
    if (v.is_null()) return "null";
    return "a number";
}

const Json* member(const Json& j, const char* name) {
    const auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::string string_field(const Json& j, const char* name, const std::string& path, bool may_be_empty) {
    const Json* v = member(j, name);
    if (!v) fail(path, fmt::format("'{}' is required", name));
    if (!v->is_string()) fail(path, fmt::format("'{}' must be a string, got {}", name, type_of(*v)));
    if (!may_be_empty && v->get_ref<const std::string&>().empty()) fail(path, fmt::format("'{}' must not be empty", name));
    return v->get<std::string>();
}

bool bool_field(const Json& j, const char* name, const std::string& path) {
    const Json* v = member(j, name);
    if (!v) return false;
    if (!v->is_boolean()) fail(path, fmt::format("'{}' must be a boolean, got {}", name, type_of(*v)));
    return v->get<bool>();
}

// A list of strings (`required`: present and not empty); each string not empty.
std::vector<std::string> strings_field(const Json& j, const char* name, const std::string& path, bool required) {
    const Json* v = member(j, name);
    if (!v) {
        if (required) fail(path, fmt::format("'{}' is required", name));
        return {};
    }
    if (!v->is_array()) fail(path, fmt::format("'{}' must be an array of strings, got {}", name, type_of(*v)));
    if (required && v->empty()) fail(path, fmt::format("'{}' must not be empty", name));
    std::vector<std::string> out;
    for (const Json& s : *v) {
        if (!s.is_string() || s.get_ref<const std::string&>().empty()) {
            fail(path, fmt::format("'{}' must hold non-empty strings, got {}", name, s.is_string() ? "\"\"" : type_of(s)));
        }
        out.push_back(s.get<std::string>());
    }
    return out;
}

const Json& array_field(const Json& j, const char* name, const std::string& path) {
    const Json* v = member(j, name);
    if (!v) fail(path, fmt::format("'{}' is required", name));
    if (!v->is_array() || v->empty()) fail(path, fmt::format("'{}' must be a non-empty array", name));
    return *v;
}

class Compiler {
public:
    explicit Compiler(GrammarBuilder& g) : g_(g) {}

    Part format(const Json& f, const Place& at) {
        if (at.depth > kMaxStructuralTagDepth) fail(at.path, fmt::format("formats nested deeper than {}", kMaxStructuralTagDepth));
        if (!f.is_object()) fail(at.path, fmt::format("a format must be an object, got {}", type_of(f)));
        const Json* t = member(f, "type");
        if (t && !t->is_string()) fail(at.path, fmt::format("'type' must be a string, got {}", type_of(*t)));
        if (!t && !f.contains("begin")) fail(at.path, "a format needs its 'type'");
        const std::string type = t ? t->get<std::string>() : "tag";
        if (type == "const_string") return {g_.literal(string_field(f, "value", at.path, true), "const_string"), false};
        if (type == "json_schema") return {json_schema(f, at), false};
        if (type == "grammar") return {wrapped(at, [&] { return add_gbnf(g_, string_field(f, "grammar", at.path, false)); }), false};
        if (type == "regex") return {regex(f, at), false};
        if (type == "any_text") return any_text(f, at);
        if (type == "sequence") return sequence(f, at);
        if (type == "or") return choice(f, at);
        if (type == "optional" || type == "star" || type == "plus" || type == "repeat") return {repetition(f, type, at), false};
        if (type == "tag") return {tag(f, at, 0), false};
        if (type == "triggered_tags") return triggered_tags(f, at);
        if (type == "tags_with_separator") return tags_with_separator(f, at);
        static constexpr std::string_view kRefused[] = {"token", "exclude_token", "any_tokens", "token_triggered_tags", "token_dispatch",
                                                        "dispatch", "qwen_xml_parameter"};
        for (const std::string_view r : kRefused) {
            if (type == r) fail(at.path, fmt::format("the format '{}' is not supported (text-level formats are; see docs/api.md)", type));
        }
        fail(at.path, fmt::format("unknown format type '{}'", type));
    }

    // vLLM's older shape: each trigger starts one of the structures whose begin starts with it.
    Part legacy(const Json& request) {
        const Place at{"structures", 0, {}, true};
        const Json& structures = array_field(request, "structures", "the request object");
        const std::vector<std::string> triggers = strings_field(request, "triggers", "the request object", true);
        std::vector<Tagged> tags;
        for (size_t i = 0; i < structures.size(); ++i) {
            const Json& s = structures[i];
            const std::string path = fmt::format("structures[{}]", i);
            if (!s.is_object()) fail(path, fmt::format("a structure must be an object, got {}", type_of(s)));
            const std::string begin = string_field(s, "begin", path, false);
            const std::string end = string_field(s, "end", path, true);
            const Json* schema = member(s, "schema");
            if (!schema || !(schema->is_object() || schema->is_boolean())) fail(path, "'schema' must be a JSON schema (an object)");
            const size_t skip = trigger_of(begin, triggers, path).size();
            const RuleId content = wrapped({path + ".schema", 1, {}, false}, [&] { return add_json_schema(g_, schema->dump()); });
            tags.push_back({begin, tag_rule(begin.substr(skip), Part{content, false}, {end})});
        }
        return triggered(triggers, tags, {}, false, false, at);
    }

private:
    // A tag that a trigger opened: its begin, and the rule for the rest of it (after the trigger).
    struct Tagged {
        std::string begin;
        RuleId rest = 0;
    };

    template <class F>
    RuleId wrapped(const Place& at, F&& make) {
        try {
            return make();
        } catch (const UsageError& e) {
            std::string_view what = e.what();
            if (what.starts_with("structural tag: ")) throw;
            fail(at.path, std::string(what));
        }
    }

    RuleId json_schema(const Json& f, const Place& at) {
        const Json* schema = member(f, "json_schema");
        if (!schema || !(schema->is_object() || schema->is_boolean())) {
            fail(at.path, "'json_schema' must be a JSON schema (an object or a boolean)");
        }
        if (const Json* style = member(f, "style"); style && *style != "json") {
            fail(at.path, fmt::format("the style {} is not supported (only \"json\")", style->dump()));
        }
        if (bool_field(f, "any_order", at.path)) fail(at.path, "'any_order' is not supported (properties come in the schema's order)");
        return wrapped(at, [&] { return add_json_schema(g_, schema->dump()); });
    }

    RuleId regex(const Json& f, const Place& at) {
        const std::string pattern = string_field(f, "pattern", at.path, false);
        if (pattern.size() > kMaxPatternBytes) {
            fail(at.path, fmt::format("the regular expression has {} bytes, more than the {} supported", pattern.size(), kMaxPatternBytes));
        }
        if (member(f, "excludes")) fail(at.path, "'excludes' on a regex is not supported");
        return wrapped(at, [&] { return add_regex(g_, pattern); });
    }

    // Open-ended content where it may not be.
    static void check_open(const char* what, const Place& at) {
        if (!at.open_allowed()) {
            fail(at.path, fmt::format("{} is open-ended: it must be the content of a tag with a non-empty end, or come last in "
                                      "the output",
                                      what));
        }
    }

    // One of the end strings (all of them, "" included).
    RuleId end_choice(const std::vector<std::string>& ends) {
        std::vector<RuleId> rules;
        for (const std::string& e : ends) rules.push_back(g_.literal(e, "end"));
        return g_.choice(rules, "end");
    }

    Part any_text(const Json& f, const Place& at) {
        check_open("any_text", at);
        for (const char* limit : {"max_tokens", "max_chars"}) {
            if (member(f, limit)) fail(at.path, fmt::format("'{}' is not supported", limit));
        }
        std::vector<WatchedString> watched;
        for (std::string& s : strings_field(f, "excludes", at.path, false)) watched.push_back({std::move(s), WatchedString::Kind::excluded, 0});
        for (const std::string& e : at.ends) watched.push_back({e, WatchedString::Kind::end, 0});
        WatchedTextOptions o;
        o.may_stop = at.ends.empty();
        return {wrapped(at, [&] { return add_watched_text(g_, watched, o); }), true};
    }

    Part sequence(const Json& f, const Place& at) {
        const Json& elements = array_field(f, "elements", at.path);
        std::vector<Element> seq;
        bool open = false;
        for (size_t i = 0; i < elements.size(); ++i) {
            Place p = at.item("elements", i);
            if (i + 1 == elements.size()) {  // (only the last may be open-ended)
                p.ends = at.ends;
                p.at_output_end = at.at_output_end;
            }
            const Part part = format(elements[i], p);
            seq.push_back(GrammarBuilder::ref(part.rule));
            open = part.open;
        }
        return {g_.sequence(std::move(seq), "sequence"), open};
    }

    Part choice(const Json& f, const Place& at) {
        const Json& elements = array_field(f, "elements", at.path);
        std::vector<RuleId> rules;
        size_t open = 0;
        for (size_t i = 0; i < elements.size(); ++i) {
            Place p = at.item("elements", i);
            p.ends = at.ends;
            p.at_output_end = at.at_output_end;
            const Part part = format(elements[i], p);
            rules.push_back(part.rule);
            open += part.open ? 1 : 0;
        }
        if (open != 0 && open != rules.size()) fail(at.path, "the elements of an 'or' must be all open-ended or none");
        return {g_.choice(rules, "or"), open != 0};
    }

    RuleId repetition(const Json& f, const std::string& type, const Place& at) {
        const Json* content = member(f, "content");
        if (!content) fail(at.path, "'content' is required");
        const RuleId rule = format(*content, at.inner("content")).rule;
        if (type == "optional") return g_.optional(rule);
        if (type == "star") return wrapped(at, [&] { return g_.star(rule); });
        if (type == "plus") return wrapped(at, [&] { return g_.plus(rule); });
        auto count = [&](const char* name) {
            const Json* v = member(f, name);
            if (!v || !v->is_number_integer()) fail(at.path, fmt::format("'{}' must be an integer", name));
            return v->get<int64_t>();
        };
        const int64_t min = count("min"), max = count("max");
        if (min < 0 || max < -1) fail(at.path, fmt::format("'min' ({}) must be at least 0 and 'max' ({}) at least -1", min, max));
        return wrapped(at, [&] { return g_.repeat(rule, min, max); });
    }

    // The rest of a tag after its begin's first `skip` bytes (a trigger's).
    RuleId tag(const Json& f, const Place& at, size_t skip) {
        if (const Json* t = member(f, "type"); t && *t != "tag") fail(at.path, fmt::format("a tag's type must be \"tag\", got {}", t->dump()));
        const std::string begin = string_field(f, "begin", at.path, true);
        const Json* end = member(f, "end");
        std::vector<std::string> ends;
        if (end && end->is_string()) {
            ends.push_back(end->get<std::string>());
        } else if (end && end->is_array() && !end->empty()) {
            for (const Json& e : *end) {
                if (!e.is_string()) fail(at.path, fmt::format("'end' must hold strings, got {}", type_of(e)));
                ends.push_back(e.get<std::string>());
            }
        } else {
            fail(at.path, "'end' must be a string or a non-empty array of strings");
        }
        const Json* content = member(f, "content");
        if (!content) fail(at.path, "'content' is required");
        Place inside = at.inner("content");
        for (const std::string& e : ends) {
            if (!e.empty()) inside.ends.push_back(e);
        }
        return tag_rule(begin.substr(skip), format(*content, inside), ends);
    }

    RuleId tag_rule(const std::string& begin, Part content, const std::vector<std::string>& ends) {
        std::vector<Element> seq = {GrammarBuilder::ref(g_.literal(begin, "begin")), GrammarBuilder::ref(content.rule)};
        if (!content.open) seq.push_back(GrammarBuilder::ref(end_choice(ends)));  // (open content took the end in)
        return g_.sequence(std::move(seq), "tag");
    }

    // The tags of a list ("tags" of triggered_tags and tags_with_separator), each after `skip(begin)`.
    template <class Skip>
    std::vector<Tagged> tags_of(const Json& f, const Place& at, Skip&& skip) {
        const Json& list = array_field(f, "tags", at.path);
        std::vector<Tagged> out;
        for (size_t i = 0; i < list.size(); ++i) {
            const Place p = at.item("tags", i);
            if (!list[i].is_object()) fail(p.path, fmt::format("a tag must be an object, got {}", type_of(list[i])));
            const std::string begin = string_field(list[i], "begin", p.path, true);
            out.push_back({begin, tag(list[i], p, skip(begin, p.path))});
        }
        return out;
    }

    static std::string trigger_of(const std::string& begin, const std::vector<std::string>& triggers, const std::string& path) {
        std::vector<std::string> found;
        for (const std::string& t : triggers) {
            if (begin.starts_with(t)) found.push_back(t);
        }
        if (found.empty()) fail(path, fmt::format("its begin '{}' starts with none of the triggers", begin));
        if (found.size() > 1) fail(path, fmt::format("its begin '{}' starts with two triggers, '{}' and '{}'", begin, found[0], found[1]));
        return found[0];
    }

    Part triggered_tags(const Json& f, const Place& at) {
        check_open("triggered_tags", at);
        const std::vector<std::string> triggers = strings_field(f, "triggers", at.path, true);
        const std::vector<Tagged> tags =
            tags_of(f, at, [&](const std::string& begin, const std::string& path) { return trigger_of(begin, triggers, path).size(); });
        return triggered(triggers, tags, strings_field(f, "excludes", at.path, false), bool_field(f, "at_least_one", at.path),
                         bool_field(f, "stop_after_first", at.path), at);
    }

    Part triggered(const std::vector<std::string>& triggers, const std::vector<Tagged>& tags, const std::vector<std::string>& excludes,
                   bool at_least_one, bool stop_after_first, const Place& at) {
        std::vector<WatchedString> watched;
        for (const std::string& s : excludes) watched.push_back({s, WatchedString::Kind::excluded, 0});
        for (const std::string& e : at.ends) watched.push_back({e, WatchedString::Kind::end, 0});
        std::vector<RuleId> firsts;  // at_least_one: a trigger and its tag
        for (const std::string& t : triggers) {
            std::vector<RuleId> rests;
            for (const Tagged& tagged : tags) {
                if (tagged.begin.starts_with(t) && trigger_of(tagged.begin, triggers, at.path) == t) rests.push_back(tagged.rest);
            }
            if (rests.empty()) fail(at.path, fmt::format("the trigger '{}' starts none of the tags", t));
            const RuleId then = g_.choice(rests, "tag");
            watched.push_back({t, WatchedString::Kind::trigger, then});
            firsts.push_back(g_.sequence({GrammarBuilder::ref(g_.literal(t, "trigger")), GrammarBuilder::ref(then)}, "tag"));
        }
        WatchedTextOptions o;
        o.may_stop = at.ends.empty();
        o.once = stop_after_first;
        if (!at.ends.empty()) o.after_once = end_choice(at.ends);
        const RuleId text = wrapped(at, [&] { return add_watched_text(g_, watched, o); });
        if (!at_least_one) return {text, true};
        // it starts with a tag: then free text again, or (stop_after_first) the end
        std::vector<Element> seq = {GrammarBuilder::ref(g_.choice(firsts, "tags"))};
        if (!stop_after_first) seq.push_back(GrammarBuilder::ref(text));
        else if (o.after_once) seq.push_back(GrammarBuilder::ref(*o.after_once));
        return {g_.sequence(std::move(seq), "triggered_tags"), true};
    }

    Part tags_with_separator(const Json& f, const Place& at) {
        check_open("tags_with_separator", at);
        const std::vector<Tagged> tags = tags_of(f, at, [](const std::string&, const std::string&) { return size_t{0}; });
        const std::string separator = string_field(f, "separator", at.path, true);
        const bool at_least_one = bool_field(f, "at_least_one", at.path);
        const bool stop_after_first = bool_field(f, "stop_after_first", at.path);
        std::vector<RuleId> rules;
        for (const Tagged& t : tags) rules.push_back(t.rest);
        const RuleId one = g_.choice(rules, "tag");
        RuleId list = one;
        if (!stop_after_first) {
            const RuleId next = g_.sequence({GrammarBuilder::ref(g_.literal(separator, "separator")), GrammarBuilder::ref(one)}, "tag");
            list = g_.sequence({GrammarBuilder::ref(one), GrammarBuilder::ref(wrapped(at, [&] { return g_.star(next); }))}, "tags");
        }
        if (!at_least_one) list = g_.optional(list);
        if (at.ends.empty()) return {list, true};
        return {g_.sequence({GrammarBuilder::ref(list), GrammarBuilder::ref(end_choice(at.ends))}, "tags"), true};
    }

    GrammarBuilder& g_;
};

}  // namespace

std::shared_ptr<const CompiledGrammar> structural_tag_grammar(std::string_view request_object) {
    TPS_CHECK_AS(UsageError, request_object.size() <= kMaxStructuralTagBytes,
                 "structural tag: the object is {} bytes, more than the {} supported", request_object.size(), kMaxStructuralTagBytes);
    const Json j = Json::parse(request_object, nullptr, false);
    if (j.is_discarded()) throw UsageError("structural tag: not valid JSON");
    if (!j.is_object()) throw UsageError(fmt::format("structural tag: must be an object, got {}", type_of(j)));
    if (const Json* t = member(j, "type"); t && *t != "structural_tag") {
        throw UsageError(fmt::format("structural tag: 'type' must be \"structural_tag\", got {}", t->dump()));
    }
    GrammarBuilder g;
    Compiler c(g);
    Part root;
    if (j.contains("structures")) {
        root = c.legacy(j);
    } else {
        const Json* f = member(j, "format");
        if (!f) throw UsageError("structural tag: 'format' is required (or vLLM's 'structures' and 'triggers')");
        root = c.format(*f, Place{"format", 0, {}, true});
    }
    try {
        return g.compile(root.rule);
    } catch (const UsageError& e) {
        throw UsageError(fmt::format("structural tag: {}", e.what()));
    }
}

}  // namespace tps::structured
