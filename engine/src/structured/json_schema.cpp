#include "tpserve/engine/structured/json_schema.h"

#include "tpserve/common/check.h"
#include "tpserve/common/json_scan.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/int_range.h"
#include "tpserve/engine/structured/regex_grammar.h"

#include "../tokenizer/utf8.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <map>
#include <optional>
#include <set>

namespace tps::structured {
namespace {

using Json = nlohmann::ordered_json;  // properties are written in the schema's order
using G = GrammarBuilder;

ByteSet without(ByteSet s, unsigned char c) {
    s.bits[c >> 6] &= ~(uint64_t{1} << (c & 63));
    return s;
}

// The pieces of JSON text every schema is made of, built once per grammar.
struct JsonPieces {
    explicit JsonPieces(GrammarBuilder& g) {
        // whitespace: nothing, one space, or a newline and an indent of up to 20 blanks
        ws = g.add_rule("ws");
        g.add_alternative(ws, {});
        g.add_alternative(ws, {G::byte(' ')});
        ByteSet blank = ByteSet::of(' ');
        blank.add('\t');
        g.add_alternative(ws, {G::byte('\n'), G::ref(g.repeat(g.sequence({G::bytes(blank)}, "blank"), 0, 20))});

        // a string's character: any but the quote, the backslash and controls; or an escape
        const CodePointRange plain_excluded[] = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
        plain = g.code_points_except(plain_excluded, "char");
        ByteSet escaped;
        for (const char c : std::string_view("\"\\/bfnrt")) escaped.add(static_cast<unsigned char>(c));
        ByteSet hex = ByteSet::range('0', '9');
        hex.add_range('a', 'f');
        hex.add_range('A', 'F');
        // \uXXXX is one character, and so is a surrogate pair \uD8xx\uDCxx (as JSON Schema counts
        // lengths); a lone surrogate is not a character and is not written
        auto u = [&](Element first, Element second) {
            return std::vector<Element>{G::byte('\\'), G::byte('u'), first, second, G::bytes(hex), G::bytes(hex)};
        };
        ByteSet not_d = hex;
        for (const char c : std::string_view("dD")) not_d = without(not_d, static_cast<unsigned char>(c));
        ByteSet d = ByteSet::of('d');
        d.add('D');
        ByteSet low_half = ByteSet::range('0', '7'), high = ByteSet::range('8', '9'), low = ByteSet::range('c', 'f');
        high.add_range('a', 'b');
        high.add_range('A', 'B');
        low.add_range('C', 'F');
        chr = g.add_rule("char");
        g.add_alternative(chr, {G::ref(plain)});
        g.add_alternative(chr, {G::byte('\\'), G::bytes(escaped)});
        g.add_alternative(chr, u(G::bytes(not_d), G::bytes(hex)));
        g.add_alternative(chr, u(G::bytes(d), G::bytes(low_half)));
        std::vector<Element> pair = u(G::bytes(d), G::bytes(high));
        const std::vector<Element> second = u(G::bytes(d), G::bytes(low));
        pair.insert(pair.end(), second.begin(), second.end());
        g.add_alternative(chr, std::move(pair));
        string = g.sequence({G::byte('"'), G::ref(g.star(chr)), G::byte('"')}, "string");

        const RuleId digit = g.sequence({G::bytes(ByteSet::range('0', '9'))}, "digit");
        const RuleId int_part = g.add_rule("int");
        g.add_alternative(int_part, {G::byte('0')});
        g.add_alternative(int_part, {G::bytes(ByteSet::range('1', '9')), G::ref(g.repeat(digit, 0, 15))});
        const RuleId minus = g.optional(g.literal("-"));
        integer = g.sequence({G::ref(minus), G::ref(int_part)}, "integer");
        const RuleId frac = g.sequence({G::byte('.'), G::ref(g.repeat(digit, 1, 16))}, "fraction");
        ByteSet e = ByteSet::of('e');
        e.add('E');
        ByteSet sign = ByteSet::of('+');
        sign.add('-');
        const RuleId exp = g.sequence({G::bytes(e), G::ref(g.optional(g.sequence({G::bytes(sign)}, "sign"))),
                                       G::ref(g.repeat(digit, 1, 3))},
                                      "exponent");
        number = g.sequence({G::ref(minus), G::ref(int_part), G::ref(g.optional(frac)), G::ref(g.optional(exp))}, "number");
        boolean = g.add_rule("boolean");
        g.add_alternative(boolean, {G::ref(g.literal("true"))});
        g.add_alternative(boolean, {G::ref(g.literal("false"))});
        null = g.literal("null", "null");

        // any value: made first and given its alternatives after, since objects hold values
        value = g.add_rule("value");
        const RuleId member = g.sequence({G::ref(string), G::ref(ws), G::byte(':'), G::ref(ws), G::ref(value), G::ref(ws)}, "member");
        object = list(g, '{', member, '}', 0, -1, "object");
        const RuleId element = g.sequence({G::ref(value), G::ref(ws)}, "element");
        array = list(g, '[', element, ']', 0, -1, "array");
        for (const RuleId r : {object, array, string, number, boolean, null}) g.add_alternative(value, {G::ref(r)});
    }

    // open ws (item ("," ws item){min-1, max-1})? close; each item ends with its own whitespace
    RuleId list(GrammarBuilder& g, char open, RuleId item, char close, int64_t min, int64_t max, std::string name) const {
        std::vector<Element> seq{G::byte(static_cast<unsigned char>(open)), G::ref(ws)};
        if (max != 0) {
            const RuleId more = g.sequence({G::byte(','), G::ref(ws), G::ref(item)}, name + "-more");
            const RuleId items = g.sequence(
                {G::ref(item), G::ref(g.repeat(more, std::max<int64_t>(min - 1, 0), max < 0 ? -1 : max - 1))}, name + "-items");
            seq.push_back(G::ref(min == 0 ? g.optional(items) : items));
        }
        seq.push_back(G::byte(static_cast<unsigned char>(close)));
        return g.sequence(std::move(seq), std::move(name));
    }

    RuleId ws = 0, plain = 0, chr = 0, string = 0, integer = 0, number = 0, boolean = 0, null = 0, value = 0, object = 0,
           array = 0;
};

const std::set<std::string, std::less<>> kIgnored = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
    "$defs", "definitions", "discriminator"};
const std::set<std::string, std::less<>> kHandled = {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "properties", "required", "additionalProperties", "items",
    "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum"};
constexpr const char* kBounds[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};

// What the formats are, as regular expressions (RFC 3339 dates and times; RFC 4122 UUIDs)
constexpr std::string_view kDate = R"(\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]))";
constexpr std::string_view kTime = R"(([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d))";
const std::map<std::string, std::string, std::less<>> kFormats = {
    {"date", std::string(kDate)},
    {"time", std::string(kTime)},
    {"date-time", std::string(kDate) + "T" + std::string(kTime)},
    {"uuid", R"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"},
};

class SchemaCompiler {
public:
    SchemaCompiler(GrammarBuilder& g, Json root) : g_(g), root_(std::move(root)), p_(g) {}
    RuleId compile_root() { return compile(root_, "#"); }
    static constexpr int kMaxDepth = 64;

    RuleId compile(const Json& s, const std::string& path, int depth = 0) {
        TPS_CHECK_AS(UsageError, depth <= kMaxDepth, "JSON schema: nested more than {} deep at {}", kMaxDepth, path);
        if (s.is_boolean()) {
            TPS_CHECK_AS(UsageError, s.get<bool>(), "JSON schema: the schema at {} is false, which admits nothing", path);
            return p_.value;
        }
        TPS_CHECK_AS(UsageError, s.is_object(), "JSON schema: the schema at {} must be an object or a boolean, got {}", path,
                     s.type_name());
        for (const auto& [key, _] : s.items()) {
            if (kIgnored.contains(key) || key.starts_with("x-")) continue;
            TPS_CHECK_AS(UsageError, kHandled.contains(key),
                         "JSON schema: '{}' at {} is not supported for structured output (it could not be enforced)", key, path);
        }
        if (const auto it = s.find("$ref"); it != s.end()) {
            only(s, path, "$ref");
            return ref(*it, path, depth);
        }
        for (const char* key : {"enum", "const"}) {
            const auto it = s.find(key);
            if (it == s.end()) continue;
            const bool is_enum = key == std::string_view("enum");
            TPS_CHECK_AS(UsageError, !is_enum || (it->is_array() && !it->empty()),
                         "JSON schema: 'enum' at {} must be a non-empty array", path);
            // beside the values only a type may stand (they are kept to those of the type)
            const Json* type = s.contains("type") ? &s["type"] : nullptr;
            for (const auto& [k, _] : s.items()) {
                TPS_CHECK_AS(UsageError, k == key || k == "type" || kIgnored.contains(k) || k.starts_with("x-"),
                             "JSON schema: '{}' beside '{}' at {} is not supported", k, key, path);
            }
            std::vector<RuleId> values;
            for (const Json& v : is_enum ? *it : Json::array({*it})) {
                if (!type || of_types(v, *type)) values.push_back(g_.literal(v.dump(), key));
            }
            TPS_CHECK_AS(UsageError, !values.empty(), "JSON schema: no value of '{}' at {} has the schema's type", key, path);
            return values.size() == 1 ? values[0] : g_.choice(values, key);
        }
        for (const char* any : {"anyOf", "oneOf"}) {
            if (const auto it = s.find(any); it != s.end()) {
                only(s, path, any);
                TPS_CHECK_AS(UsageError, it->is_array() && !it->empty(), "JSON schema: '{}' at {} must be a non-empty array", any,
                             path);
                std::vector<RuleId> alts;
                for (size_t i = 0; i < it->size(); ++i) {
                    alts.push_back(compile((*it)[i], fmt::format("{}/{}/{}", path, any, i), depth + 1));
                }
                return g_.choice(alts, any);
            }
        }
        if (const auto it = s.find("allOf"); it != s.end()) {
            only(s, path, "allOf");
            TPS_CHECK_AS(UsageError, it->is_array() && it->size() == 1,
                         "JSON schema: 'allOf' at {} is supported with one schema only (intersections are not)", path);
            return compile((*it)[0], path + "/allOf/0", depth + 1);
        }
        std::vector<std::string> types;
        if (const auto it = s.find("type"); it != s.end()) {
            if (it->is_string()) {
                types.push_back(it->get<std::string>());
            } else {
                TPS_CHECK_AS(UsageError, it->is_array() && !it->empty(),
                             "JSON schema: 'type' at {} must be a string or a non-empty array of strings", path);
                for (const Json& t : *it) {
                    TPS_CHECK_AS(UsageError, t.is_string(), "JSON schema: 'type' at {} must list strings, got {}", path, t.dump());
                    types.push_back(t.get<std::string>());
                }
            }
        } else if (has_any(s, {"properties", "required", "additionalProperties"})) {
            types.push_back("object");
        } else if (has_any(s, {"items", "prefixItems", "minItems", "maxItems"})) {
            types.push_back("array");
        } else if (has_any(s, {"minLength", "maxLength", "pattern", "format"})) {
            types.push_back("string");
        } else if (has_any(s, {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) {
            types.push_back("number");  // (refused below: bounds are taken on integers only)
        } else {
            return p_.value;
        }
        for (const char* bound : kBounds) {
            TPS_CHECK_AS(UsageError, !s.contains(bound) || (types.size() == 1 && types[0] == "integer"),
                         "JSON schema: '{}' at {} is supported on integers only (\"type\": \"integer\")", bound, path);
        }
        std::vector<RuleId> alts;
        for (const std::string& t : types) alts.push_back(of_type(s, t, path, depth));
        return alts.size() == 1 ? alts[0] : g_.choice(alts, "types");
    }

private:

    static bool has_any(const Json& s, std::initializer_list<const char*> keys) {
        for (const char* k : keys) {
            if (s.contains(k)) return true;
        }
        return false;
    }

    // `key` with nothing beside it but annotations
    static void only(const Json& s, const std::string& path, const char* key) {
        for (const auto& [k, _] : s.items()) {
            TPS_CHECK_AS(UsageError, k == key || kIgnored.contains(k) || k.starts_with("x-"),
                         "JSON schema: '{}' beside '{}' at {} is not supported (put it inside the alternatives)", k, key, path);
        }
    }

    static int64_t count(const Json& s, const char* key, int64_t fallback, const std::string& path) {
        const auto it = s.find(key);
        if (it == s.end()) return fallback;
        TPS_CHECK_AS(UsageError, it->is_number_integer() && (it->is_number_unsigned() || it->get<int64_t>() >= 0),
                     "JSON schema: '{}' at {} must be a non-negative integer, got {}", key, path, it->dump());
        TPS_CHECK_AS(UsageError, it->get<uint64_t>() <= static_cast<uint64_t>(GrammarBuilder::kMaxRepeat),
                     "JSON schema: '{}' {} at {} is more than the {} supported", key, it->dump(), path, GrammarBuilder::kMaxRepeat);
        return it->get<int64_t>();
    }

    // Whether a value has one of the types `type` names (a string or a list of them).
    static bool of_types(const Json& v, const Json& type) {
        if (type.is_array()) {
            return std::any_of(type.begin(), type.end(), [&](const Json& t) { return of_types(v, t); });
        }
        if (!type.is_string()) return false;
        const std::string t = type.get<std::string>();
        if (t == "integer") return v.is_number_integer() || (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>());
        if (t == "number") return v.is_number();
        if (t == "string") return v.is_string();
        if (t == "boolean") return v.is_boolean();
        if (t == "null") return v.is_null();
        if (t == "object") return v.is_object();
        if (t == "array") return v.is_array();
        return false;
    }

    RuleId ref(const Json& target, const std::string& path, int depth) {
        TPS_CHECK_AS(UsageError, target.is_string(), "JSON schema: '$ref' at {} must be a string", path);
        const std::string where = target.get<std::string>();
        if (const auto it = refs_.find(where); it != refs_.end()) return it->second;
        TPS_CHECK_AS(UsageError, where == "#" || where.starts_with("#/"),
                     "JSON schema: '$ref' '{}' at {} is not supported (only references inside the schema, \"#...\")", where,
                     path);
        const Json* at = &root_;
        for (size_t i = 2; i <= where.size() && where != "#";) {
            size_t end = where.find('/', i);
            if (end == std::string::npos) end = where.size();
            std::string part = where.substr(i, end - i);
            for (size_t k = 0; (k = part.find('~', k)) != std::string::npos; ++k) {
                TPS_CHECK_AS(UsageError, k + 1 < part.size() && (part[k + 1] == '0' || part[k + 1] == '1'),
                             "JSON schema: '$ref' '{}' at {} has a bad escape", where, path);
                part.replace(k, 2, part[k + 1] == '0' ? "~" : "/");
            }
            const Json* next = nullptr;
            if (at->is_object() && at->contains(part)) next = &(*at)[part];
            if (at->is_array() && !part.empty() && part.size() <= 9 && part.find_first_not_of("0123456789") == std::string::npos &&
                std::stoull(part) < at->size()) {
                next = &(*at)[std::stoull(part)];
            }
            TPS_CHECK_AS(UsageError, next != nullptr, "JSON schema: '$ref' '{}' at {} points at nothing", where, path);
            at = next;
            i = end + 1;
        }
        const RuleId rule = g_.add_rule("$ref " + where);
        refs_.emplace(where, rule);
        g_.add_alternative(rule, {G::ref(compile(*at, where, depth + 1))});
        return rule;
    }

    RuleId of_type(const Json& s, const std::string& type, const std::string& path, int depth) {
        if (type == "object") return object(s, path, depth);
        if (type == "array") return array(s, path, depth);
        if (type == "string") return string(s, path);
        if (type == "number") return p_.number;
        if (type == "integer") return integer(s, path);
        if (type == "boolean") return p_.boolean;
        if (type == "null") return p_.null;
        throw UsageError(fmt::format("JSON schema: unknown type '{}' at {}", type, path));
    }

    // minimum / maximum (inclusive) and exclusiveMinimum / exclusiveMaximum (numbers, as since
    // draft 6) on an integer: its range
    RuleId integer(const Json& s, const std::string& path) {
        std::optional<int64_t> lo, hi;
        auto bound = [&](const char* key, bool lower, bool exclusive) {
            const auto it = s.find(key);
            if (it == s.end()) return;
            TPS_CHECK_AS(UsageError, it->is_number(), "JSON schema: '{}' at {} must be a number, got {}", key, path, it->dump());
            const double v = it->get<double>();
            TPS_CHECK_AS(UsageError, std::abs(v) < 9.2e18, "JSON schema: '{}' {} at {} is out of range", key, it->dump(), path);
            // the integers past the bound: above it (lower) or below it
            double edge = lower ? std::ceil(v) : std::floor(v);
            if (exclusive && edge == v) edge += lower ? 1 : -1;
            const auto e = static_cast<int64_t>(edge);
            if (lower) lo = lo ? std::max(*lo, e) : e;
            else hi = hi ? std::min(*hi, e) : e;
        };
        bound("minimum", true, false);
        bound("exclusiveMinimum", true, true);
        bound("maximum", false, false);
        bound("exclusiveMaximum", false, true);
        if (!lo && !hi) return p_.integer;
        TPS_CHECK_AS(UsageError, !lo || !hi || *lo <= *hi, "JSON schema: no integer lies between the bounds at {}", path);
        return add_int_range(g_, lo, hi);
    }

    RuleId object(const Json& s, const std::string& path, int depth) {
        struct Property {
            std::string name;
            RuleId value = 0;
            bool required = false;
        };
        std::vector<Property> props;
        if (const auto it = s.find("properties"); it != s.end()) {
            TPS_CHECK_AS(UsageError, it->is_object(), "JSON schema: 'properties' at {} must be an object", path);
            for (const auto& [name, sub] : it->items()) {
                props.push_back({name, compile(sub, path + "/properties/" + name, depth + 1), false});
            }
        }
        if (const auto it = s.find("required"); it != s.end()) {
            TPS_CHECK_AS(UsageError, it->is_array(), "JSON schema: 'required' at {} must be an array of names", path);
            for (const Json& name : *it) {
                TPS_CHECK_AS(UsageError, name.is_string(), "JSON schema: 'required' at {} must list strings, got {}", path, name.dump());
                const auto p = std::find_if(props.begin(), props.end(), [&](const Property& x) { return x.name == name; });
                TPS_CHECK_AS(UsageError, p != props.end(),
                             "JSON schema: the required property '{}' at {} is not among its 'properties'", name.get<std::string>(),
                             path);
                p->required = true;
            }
        }
        // other properties: none beside listed ones unless said; any in an object that lists none
        std::optional<RuleId> extra;
        if (const auto it = s.find("additionalProperties"); it != s.end()) {
            if (!(it->is_boolean() && !it->get<bool>())) extra = compile(*it, path + "/additionalProperties", depth + 1);
        } else if (!s.contains("properties")) {
            extra = p_.value;
        }

        auto member = [&](RuleId key, RuleId value) {
            return g_.sequence({G::ref(key), G::ref(p_.ws), G::byte(':'), G::ref(p_.ws), G::ref(value), G::ref(p_.ws)}, "member");
        };
        // rest(i): the members from i on after one was written; first(i): before any was
        RuleId rest = g_.sequence({}, "end");
        RuleId first = rest;
        if (extra) {
            // beside listed properties an extra key is none of them (else an optional one could be
            // skipped and then written as an extra with a value of any schema)
            std::vector<std::string> names;
            for (const Property& p : props) names.push_back(p.name);
            const RuleId kv = member(names.empty() ? p_.string : key_except(names), *extra);
            const RuleId more = g_.star(g_.sequence({G::byte(','), G::ref(p_.ws), G::ref(kv)}, "more"));
            rest = more;
            first = g_.optional(g_.sequence({G::ref(kv), G::ref(more)}, "extra"));
        }
        for (size_t i = props.size(); i-- > 0;) {
            const RuleId kv = member(g_.literal(Json(props[i].name).dump(), "key"), props[i].value);
            const RuleId r = g_.add_rule("rest " + props[i].name);
            g_.add_alternative(r, {G::byte(','), G::ref(p_.ws), G::ref(kv), G::ref(rest)});
            if (!props[i].required) g_.add_alternative(r, {G::ref(rest)});
            const RuleId f = g_.add_rule("first " + props[i].name);
            g_.add_alternative(f, {G::ref(kv), G::ref(rest)});
            if (!props[i].required) g_.add_alternative(f, {G::ref(first)});
            rest = r;
            first = f;
        }
        return g_.sequence({G::byte('{'), G::ref(p_.ws), G::ref(first), G::byte('}')}, "object");
    }

    // A key that is none of `names`: a JSON string without escapes (so that no name can be spelled
    // another way) whose text is not one of them, followed character by character down a trie.
    RuleId key_except(const std::vector<std::string>& names) {
        struct Node {
            std::map<char32_t, size_t> next;
            bool name = false;
        };
        std::vector<Node> trie(1);
        for (const std::string& n : names) {
            if (Json(n).dump() != "\"" + n + "\"") continue;  // it needs an escape: no such key can be it
            size_t at = 0;
            for (const char32_t c : tok::utf8_to_u32(n)) {
                if (!trie[at].next.contains(c)) {
                    trie[at].next.emplace(c, trie.size());
                    trie.emplace_back();
                }
                at = trie[at].next.at(c);
            }
            trie[at].name = true;
        }
        const RuleId rest = g_.star(p_.plain);
        std::vector<RuleId> rule;
        for (size_t v = 0; v < trie.size(); ++v) rule.push_back(g_.add_rule("key-except"));
        for (size_t v = 0; v < trie.size(); ++v) {
            if (!trie[v].name) g_.add_alternative(rule[v], {});
            std::vector<CodePointRange> other = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
            for (const auto& [c, child] : trie[v].next) other.push_back({c, c});
            g_.add_alternative(rule[v], {G::ref(g_.code_points_except(other, "key-char")), G::ref(rest)});
            for (const auto& [c, child] : trie[v].next) {
                std::string bytes;
                tok::utf8_append(bytes, c);
                std::vector<Element> seq;
                for (const char b : bytes) seq.push_back(G::byte(static_cast<unsigned char>(b)));
                seq.push_back(G::ref(rule[child]));
                g_.add_alternative(rule[v], std::move(seq));
            }
        }
        return g_.sequence({G::byte('"'), G::ref(rule[0]), G::byte('"')}, "extra-key");
    }

    RuleId array(const Json& s, const std::string& path, int depth) {
        const auto items_it = s.find("items");
        std::optional<RuleId> item = p_.value;
        if (items_it != s.end()) {
            if (items_it->is_boolean() && !items_it->get<bool>()) {
                item.reset();
            } else {
                item = compile(*items_it, path + "/items", depth + 1);
            }
        }
        const auto prefix = s.find("prefixItems");
        if (prefix != s.end() && !(prefix->is_array() && prefix->empty())) {
            TPS_CHECK_AS(UsageError, prefix->is_array(), "JSON schema: 'prefixItems' at {} must be an array of schemas", path);
            TPS_CHECK_AS(UsageError, !s.contains("minItems") && !s.contains("maxItems"),
                         "JSON schema: 'minItems' and 'maxItems' beside 'prefixItems' at {} are not supported", path);
            if (items_it == s.end()) item.reset();  // strict: the tuple and nothing more
            std::vector<Element> seq{G::byte('['), G::ref(p_.ws)};
            for (size_t i = 0; i < prefix->size(); ++i) {
                if (i > 0) seq.insert(seq.end(), {G::byte(','), G::ref(p_.ws)});
                seq.insert(seq.end(), {G::ref(compile((*prefix)[i], fmt::format("{}/prefixItems/{}", path, i), depth + 1)),
                                       G::ref(p_.ws)});
            }
            if (item) {
                seq.push_back(G::ref(g_.star(g_.sequence({G::byte(','), G::ref(p_.ws), G::ref(*item), G::ref(p_.ws)}, "more"))));
            }
            seq.push_back(G::byte(']'));
            return g_.sequence(std::move(seq), "tuple");
        }
        const int64_t min = count(s, "minItems", 0, path);
        int64_t max = count(s, "maxItems", -1, path);
        TPS_CHECK_AS(UsageError, max < 0 || max >= min, "JSON schema: 'maxItems' {} is below 'minItems' {} at {}", max, min, path);
        if (!item) {
            TPS_CHECK_AS(UsageError, min == 0, "JSON schema: 'items' false with 'minItems' {} at {} admits nothing", min, path);
            max = 0;
        }
        const RuleId element = g_.sequence({G::ref(item.value_or(p_.value)), G::ref(p_.ws)}, "element");
        return p_.list(g_, '[', element, ']', min, max, "array");
    }

    RuleId string(const Json& s, const std::string& path) {
        const int64_t min = count(s, "minLength", 0, path);
        const int64_t max = count(s, "maxLength", -1, path);
        TPS_CHECK_AS(UsageError, max < 0 || max >= min, "JSON schema: 'maxLength' {} is below 'minLength' {} at {}", max, min, path);
        std::string pattern;
        if (const auto it = s.find("pattern"); it != s.end()) {
            TPS_CHECK_AS(UsageError, it->is_string(), "JSON schema: 'pattern' at {} must be a string", path);
            pattern = it->get<std::string>();
        }
        if (const auto it = s.find("format"); it != s.end()) {
            TPS_CHECK_AS(UsageError, it->is_string(), "JSON schema: 'format' at {} must be a string", path);
            const auto f = kFormats.find(it->get<std::string>());
            TPS_CHECK_AS(UsageError, f != kFormats.end(),
                         "JSON schema: the format '{}' at {} is not supported (date, time, date-time and uuid are)",
                         it->get<std::string>(), path);
            TPS_CHECK_AS(UsageError, pattern.empty(), "JSON schema: 'pattern' and 'format' together at {} are not supported", path);
            pattern = f->second;
        }
        if (pattern.empty()) {
            return g_.sequence({G::byte('"'), G::ref(g_.repeat(p_.chr, min, max)), G::byte('"')}, "string");
        }
        TPS_CHECK_AS(UsageError, !s.contains("minLength") && !s.contains("maxLength"),
                     "JSON schema: 'minLength' or 'maxLength' beside a pattern or format at {} is not supported", path);
        // the pattern is matched against the text between the quotes, which must need no escape
        const RuleId first_new = static_cast<RuleId>(g_.rule_count());
        RuleId body = 0;
        TPS_CHECK_AS(UsageError, pattern.size() <= kMaxPatternBytes,
                     "JSON schema: the pattern at {} has {} bytes, more than the {} supported", path, pattern.size(),
                     kMaxPatternBytes);
        try {
            body = add_regex(g_, pattern);
        } catch (const UsageError& e) {
            throw UsageError(fmt::format("JSON schema: the pattern at {}: {}", path, e.what()));
        }
        const ByteSet used = g_.bytes_used(first_new, static_cast<RuleId>(g_.rule_count()));
        bool needs_escape = used.has('"') || used.has('\\');
        for (unsigned c = 0; c < 0x20; ++c) needs_escape = needs_escape || used.has(static_cast<unsigned char>(c));
        TPS_CHECK_AS(UsageError, !needs_escape,
                     "JSON schema: the pattern at {} may match a quote, a backslash or a control character, which JSON "
                     "would have to escape; that is not supported",
                     path);
        return g_.sequence({G::byte('"'), G::ref(body), G::byte('"')}, "pattern");
    }

    GrammarBuilder& g_;
    Json root_;
    JsonPieces p_;
    std::map<std::string, RuleId, std::less<>> refs_;
};

}  // namespace

RuleId add_json_value(GrammarBuilder& g) { return JsonPieces(g).value; }

RuleId add_json_object(GrammarBuilder& g) { return JsonPieces(g).object; }

RuleId add_json_schema(GrammarBuilder& g, std::string_view schema) {
    // (a schema comes as text too: its depth is checked before a parser and the copies recurse)
    TPS_CHECK_AS(UsageError, !nests_deeper_than(schema, 2 * SchemaCompiler::kMaxDepth), "JSON schema: nested more than {} deep",
                 2 * SchemaCompiler::kMaxDepth);
    Json root;
    try {
        root = Json::parse(schema);
    } catch (const Json::exception& e) {
        throw UsageError(fmt::format("JSON schema: not JSON ({})", e.what()));
    }
    SchemaCompiler c(g, std::move(root));
    return c.compile_root();
}

}  // namespace tps::structured
