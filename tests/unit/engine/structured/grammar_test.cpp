// The grammar matcher and the JSON grammars: what they admit and refuse, byte by byte.
#include "tpserve/common/error.h"
#include "tpserve/engine/structured/formats.h"
#include "tpserve/engine/structured/grammar.h"
#include "tpserve/engine/structured/int_range.h"
#include "engine/src/tokenizer/utf8.h"  // the tokenizer's UTF-8 encoder
#include "grammar_test_support.h"

#include <fmt/format.h>

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace tps::structured {
namespace {

using G = GrammarBuilder;

using testing_support::matches;

// Whether `text` could still become a sentence (a prefix of one).
bool prefix(const std::shared_ptr<const CompiledGrammar>& g, std::string_view text) {
    GrammarState s(g);
    return s.advance(text);
}

std::string utf8(char32_t c) {
    std::string out;
    tok::utf8_append(out, c);
    return out;
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const UsageError& e) {
        return e.what();
    }
    return "(no UsageError)";
}

TEST(Grammar, LiteralsChoicesAndRepeats) {
    G g;
    const RuleId ab = g.literal("ab");
    const RuleId c = g.literal("c");
    const RuleId alts[] = {ab, c};
    const RuleId either = g.choice(alts);
    const RuleId root = g.sequence({G::ref(g.repeat(either, 2, 3)), G::byte('!')});
    const auto grammar = g.compile(root);
    for (const char* yes : {"abc!", "cc!", "ababab!", "cabc!"}) EXPECT_TRUE(matches(grammar, yes)) << yes;
    for (const char* no : {"c!", "abcabc!", "abc", "a!", "cc!!", ""}) EXPECT_FALSE(matches(grammar, no)) << no;
    EXPECT_TRUE(prefix(grammar, "aba"));
    EXPECT_FALSE(prefix(grammar, "abb"));

    GrammarState s(grammar);
    ASSERT_TRUE(s.advance("cc"));
    EXPECT_FALSE(s.complete());
    EXPECT_TRUE(s.next_bytes().has('!'));
    EXPECT_TRUE(s.next_bytes().has('a'));
    EXPECT_FALSE(s.next_bytes().has('b'));
    ASSERT_TRUE(s.advance("!"));
    EXPECT_TRUE(s.complete());
    EXPECT_FALSE(s.can_continue());
}

TEST(Grammar, UnboundedRepeatKeepsStacksFlat) {
    G g;
    const auto grammar = g.compile(g.star(g.literal("xy")));
    GrammarState s(grammar);
    EXPECT_TRUE(s.complete());
    for (int i = 0; i < 10000; ++i) ASSERT_TRUE(s.advance("xy"));
    EXPECT_TRUE(s.complete());
    EXPECT_LE(s.key().size(), 4u);  // one stack of one position, however long the text
}

TEST(Grammar, CodePointsAreUtf8) {
    G g;
    const CodePointRange ranges[] = {{'a', 'c'}, {0xE9, 0xE9}, {0x3B1, 0x3C9}, {0x4E00, 0x9FFF}, {0x1F600, 0x1F64F}};
    const auto grammar = g.compile(g.code_points(ranges));
    std::mt19937 rng(7);
    for (const auto& r : ranges) {
        for (int i = 0; i < 50; ++i) {
            const auto c = static_cast<char32_t>(std::uniform_int_distribution<uint32_t>(r.first, r.last)(rng));
            EXPECT_TRUE(matches(grammar, utf8(c))) << static_cast<uint32_t>(c);
        }
        EXPECT_FALSE(matches(grammar, utf8(r.last + 1)));
    }
    EXPECT_FALSE(matches(grammar, "d"));
    EXPECT_FALSE(matches(grammar, "\xC3"));         // half of é
    EXPECT_FALSE(matches(grammar, "\xC3\xA9\xA9"));  // a stray continuation byte
    EXPECT_FALSE(matches(grammar, "\xE0\x81\xA1"));  // an overlong "a"

    G g2;
    const CodePointRange quote[] = {{'"', '"'}};
    const auto any_but_quote = g2.compile(g2.code_points_except(quote));
    for (const char32_t c : {char32_t{'a'}, char32_t{0}, char32_t{0x7FF}, char32_t{0x800}, char32_t{0xFFFF}, char32_t{0x10000},
                             char32_t{0x10FFFF}, char32_t{0xD7FF}, char32_t{0xE000}}) {
        EXPECT_TRUE(matches(any_but_quote, utf8(c))) << static_cast<uint32_t>(c);
    }
    EXPECT_FALSE(matches(any_but_quote, "\""));
    EXPECT_FALSE(matches(any_but_quote, "\xED\xA0\x80"));  // U+D800, a surrogate
    EXPECT_FALSE(matches(any_but_quote, "\xF4\x90\x80\x80"));  // past U+10FFFF
}

TEST(Grammar, RefusesBrokenGrammars) {
    {
        G g;
        const RuleId r = g.add_rule("loop");
        g.add_alternative(r, {G::ref(r), G::byte('a')});
        g.add_alternative(r, {G::byte('b')});
        EXPECT_NE(message_of([&] { (void)g.compile(r); }).find("'loop' is left-recursive"), std::string::npos);
    }
    {
        // left recursion through a rule that matches ""
        G g;
        const RuleId r = g.add_rule("r");
        const RuleId maybe = g.optional(g.literal("x"));
        g.add_alternative(r, {G::ref(maybe), G::ref(r), G::byte('a')});
        g.add_alternative(r, {G::byte('a')});
        EXPECT_NE(message_of([&] { (void)g.compile(r); }).find("left-recursive"), std::string::npos);
    }
    {
        G g;
        const RuleId r = g.add_rule("nothing");
        EXPECT_NE(message_of([&] { (void)g.compile(r); }).find("'nothing' matches nothing"), std::string::npos);
    }
    G g;
    const RuleId a = g.literal("a");
    EXPECT_NE(message_of([&] { (void)g.repeat(a, 0, G::kMaxRepeat + 1); }).find("more than the 10000"), std::string::npos);
    EXPECT_NE(message_of([&] { (void)g.repeat(a, 3, 2); }).find("3 to 2"), std::string::npos);
    const CodePointRange backwards[] = {{'z', 'a'}};
    EXPECT_NE(message_of([&] { (void)g.code_points(backwards); }).find("wrong way round"), std::string::npos);
}

TEST(Grammar, AmbiguityHasALimit) {
    // equal readings merge, but a rule read in more ways than kMaxStacks at once is refused
    G g;
    const RuleId a = g.literal("a");
    std::vector<RuleId> same(GrammarState::kMaxStacks + 1, a);
    const RuleId many = g.add_rule("many");
    for (const RuleId r : same) g.add_alternative(many, {G::ref(r), G::byte('b'), G::byte(static_cast<unsigned char>('0' + r % 2))});
    const auto grammar = g.compile(g.sequence({G::ref(many)}));
    EXPECT_NE(message_of([&] { GrammarState s(grammar); }).find("too ambiguous"), std::string::npos);
}

// --- JSON -------------------------------------------------------------------------------------

TEST(JsonGrammar, AnyObject) {
    const auto g = json_object_grammar();
    for (const char* yes : {"{}", "{ }", R"({"a":1})", R"({"a": [1, 2.5, -3e10, true, false, null, "x\n\u00e9\"", {}]})",
                            "{\n  \"k\": {\"n\": []}\n}", R"({"é": "日本"})", R"({"a":0.5,"b":-0})"}) {
        EXPECT_TRUE(matches(g, yes)) << yes;
    }
    for (const char* no : {"[]", "1", R"({"a":1,})", R"({'a':1})", R"({"a":01})", "{\"a\":\"\x01\"}", R"({"a":1}x)",
                           R"({"a" 1})", R"({"a":tru})", R"({"a":"\x"})", R"({"a":1.})", " {}", "{     \n}"}) {
        EXPECT_FALSE(matches(g, no)) << no;
    }
    // whitespace is bounded: 20 blanks after a newline, not 21
    EXPECT_TRUE(matches(g, "{\n" + std::string(20, ' ') + "}"));
    EXPECT_FALSE(prefix(g, "{\n" + std::string(21, ' ')));
    // numbers end: at most 16 integer digits
    EXPECT_TRUE(matches(g, "{\"a\":" + std::string(16, '9') + "}"));
    EXPECT_FALSE(prefix(g, "{\"a\":" + std::string(17, '9')));
}

TEST(JsonSchemaGrammar, PropertiesInOrderWithRequiredAndOptional) {
    const auto g = json_schema_grammar(R"({"type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
        "required": ["a", "c"]})");
    for (const char* yes : {R"({"a":1,"c":true})", R"({"a": -7, "b": "x", "c": false})", R"({ "a" : 0 , "c" : true })"}) {
        EXPECT_TRUE(matches(g, yes)) << yes;
    }
    for (const char* no : {R"({"c":true,"a":1})", R"({"a":1})", R"({"a":1,"c":true,"d":1})", R"({"a":1.5,"c":true})",
                           R"({"a":"1","c":true})", R"({,"a":1,"c":true})", R"({"a":1,,"c":true})", "{}"}) {
        EXPECT_FALSE(matches(g, no)) << no;
    }
    const auto all_optional = json_schema_grammar(R"({"properties": {"x": {"type": "null"}, "y": {"type": "number"}}})");
    for (const char* yes : {"{}", R"({"x":null})", R"({"y":2.5})", R"({"x":null,"y":1})"}) EXPECT_TRUE(matches(all_optional, yes)) << yes;
    for (const char* no : {R"({"y":1,"x":null})", R"({"x":null,})", R"({,"y":1})"}) EXPECT_FALSE(matches(all_optional, no)) << no;
}

TEST(JsonSchemaGrammar, AdditionalProperties) {
    const auto extra = json_schema_grammar(R"({"type": "object", "additionalProperties": {"type": "string"}})");
    EXPECT_TRUE(matches(extra, "{}"));
    EXPECT_TRUE(matches(extra, R"({"x":"y","z":""})"));
    EXPECT_FALSE(matches(extra, R"({"id":1,"x":2})"));
    EXPECT_NO_THROW((void)json_schema_grammar(R"({"properties": {"id": {}}, "additionalProperties": false})"));
    // beside listed properties, an extra key is none of them, so a listed one keeps its schema
    const auto both = json_schema_grammar(R"({"properties": {"a": {"type": "integer"}, "ab": {"type": "boolean"},
        "é": {"type": "null"}, "q\"": {"type": "null"}}, "additionalProperties": {"type": "string"}})");
    for (const char* yes : {R"({"a":1,"b":"x"})", R"({"abc":"x","":"y","x":"z"})", R"({"ab":true,"a2":"s"})", R"({"éé":"s","e":"t"})",
                            "{}", R"({"q\"":null})", R"({"q":"s"})"}) {
        EXPECT_TRUE(matches(both, yes)) << yes;
    }
    for (const char* no : {R"({"a":"x"})", R"({"b":"x","a":"y"})", R"({"ab":"x"})", R"({"é":"x"})", R"({"\u0061":"x"})",
                           R"({"a":1,"a":"x"})"}) {
        EXPECT_FALSE(matches(both, no)) << no;
    }
    const auto any = json_schema_grammar(R"({"type": "object"})");
    EXPECT_TRUE(matches(any, R"({"q":[1,{"r":null}]})"));
    const auto none = json_schema_grammar(R"({"type": "object", "additionalProperties": false})");
    EXPECT_TRUE(matches(none, "{}"));
    EXPECT_FALSE(matches(none, R"({"a":1})"));
}

TEST(JsonSchemaGrammar, EnumConstAnyOfAndTypeLists) {
    const auto g = json_schema_grammar(R"({"type": "object", "properties": {
        "color": {"enum": ["red", "green", 3, null]},
        "kind": {"const": "fixed"},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "either": {"type": ["string", "boolean"]}},
        "required": ["color", "kind", "maybe", "either"]})");
    EXPECT_TRUE(matches(g, R"({"color":"red","kind":"fixed","maybe":null,"either":"s"})"));
    EXPECT_TRUE(matches(g, R"({"color":3,"kind":"fixed","maybe":12,"either":true})"));
    EXPECT_TRUE(matches(g, R"({"color":null,"kind":"fixed","maybe":0,"either":false})"));
    EXPECT_FALSE(matches(g, R"({"color":"blue","kind":"fixed","maybe":null,"either":"s"})"));
    EXPECT_FALSE(matches(g, R"({"color":"red","kind":"other","maybe":null,"either":"s"})"));
    EXPECT_FALSE(matches(g, R"({"color":"red","kind":"fixed","maybe":"1","either":"s"})"));
    EXPECT_FALSE(matches(g, R"({"color":"red","kind":"fixed","maybe":null,"either":1})"));
    const auto typed = json_schema_grammar(R"({"type": "string", "enum": ["a", 1, "b"]})");
    EXPECT_TRUE(matches(typed, R"("b")"));
    EXPECT_FALSE(matches(typed, "1"));
}

// A surrogate pair written as escapes is one character, as JSON Schema counts (a lone surrogate is
// no character at all).
TEST(JsonSchemaGrammar, EscapedSurrogatePairsAreOneCharacter) {
    const auto one = json_schema_grammar(R"({"type": "string", "minLength": 1, "maxLength": 1})");
    EXPECT_TRUE(matches(one, R"("\uD83D\uDE00")"));
    EXPECT_TRUE(matches(one, R"("\u00e9")"));
    EXPECT_TRUE(matches(one, R"("\uFFFD")"));
    EXPECT_FALSE(matches(one, R"("\uD83D")"));
    EXPECT_FALSE(matches(one, R"("\uDE00")"));
    const auto two = json_schema_grammar(R"({"type": "string", "minLength": 2})");
    EXPECT_FALSE(matches(two, R"("\uD83D\uDE00")"));
    EXPECT_TRUE(matches(two, R"("\uD7FFa")"));
}

TEST(JsonSchemaGrammar, ArraysAndStrings) {
    const auto g = json_schema_grammar(R"({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 3},
        "minItems": 1, "maxItems": 3})");
    for (const char* yes : {R"(["a"])", R"(["abc", "é日x", "\n"])", R"([ "a" , "b" ])"}) EXPECT_TRUE(matches(g, yes)) << yes;
    for (const char* no : {"[]", R"([""])", R"(["abcd"])", R"(["a","b","c","d"])", R"(["a",])"}) EXPECT_FALSE(matches(g, no)) << no;
    const auto tuple = json_schema_grammar(R"({"prefixItems": [{"type": "integer"}, {"type": "string"}]})");
    EXPECT_TRUE(matches(tuple, R"([1,"a"])"));
    EXPECT_FALSE(matches(tuple, R"([1])"));
    EXPECT_FALSE(matches(tuple, R"([1,"a",2])"));
    const auto formats = json_schema_grammar(R"({"properties": {"d": {"format": "date"}, "u": {"type": "string", "format": "uuid"},
        "p": {"type": "string", "pattern": "^[A-Z]{2}-\\d+$"}}, "required": ["d", "u", "p"]})");
    EXPECT_TRUE(matches(formats, R"({"d":"2026-11-28","u":"123e4567-e89b-12d3-a456-426614174000","p":"AB-12"})"));
    EXPECT_FALSE(matches(formats, R"({"d":"2026-13-28","u":"123e4567-e89b-12d3-a456-426614174000","p":"AB-12"})"));
    EXPECT_FALSE(matches(formats, R"({"d":"2026-11-28","u":"123e4567","p":"AB-12"})"));
    EXPECT_FALSE(matches(formats, R"({"d":"2026-11-28","u":"123e4567-e89b-12d3-a456-426614174000","p":"Ab-12"})"));
}

TEST(JsonSchemaGrammar, ReferencesAndRecursion) {
    const auto g = json_schema_grammar(R"({"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
        "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"]}}})");
    EXPECT_TRUE(matches(g, R"({"v":1})"));
    EXPECT_TRUE(matches(g, R"({"v":1,"kids":[{"v":2},{"v":3,"kids":[{"v":4,"kids":[]}]}]})"));
    EXPECT_FALSE(matches(g, R"({"v":1,"kids":[{"w":2}]})"));
}

TEST(JsonSchemaGrammar, RefusesWhatItCannotEnforce) {
    auto refused = [](const char* schema) { return message_of([&] { (void)json_schema_grammar(schema); }); };
    EXPECT_NE(refused(R"({"type": "integer", "multipleOf": 5})").find("'multipleOf' at # is not supported"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "number", "minimum": 0})").find("'minimum' at # is supported on integers only"),
              std::string::npos);
    EXPECT_NE(refused(R"({"minimum": 0})").find("on integers only"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "integer", "minimum": 3, "maximum": 2.5})").find("no integer lies between"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "integer", "exclusiveMinimum": true})").find("must be a number"), std::string::npos);
    EXPECT_NE(refused(R"({"properties": {"a": {"type": "array", "uniqueItems": true}}})").find("'uniqueItems' at #/properties/a"),
              std::string::npos);
    EXPECT_NE(refused(R"({"properties": {"a": {}}, "required": ["b"]})").find("'b'"), std::string::npos);
    EXPECT_NE(refused(R"({"$ref": "#/$defs/missing"})").find("points at nothing"), std::string::npos);
    EXPECT_NE(refused(R"({"$ref": "https://example.com/s.json"})").find("only references inside"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "strin"})").find("unknown type 'strin'"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "string", "format": "email"})").find("format 'email'"), std::string::npos);
    EXPECT_NE(refused(R"({"allOf": [{}, {}]})").find("one schema only"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "string", "pattern": "a\"b"})").find("escape"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "string", "maxLength": 2, "minLength": 3})").find("below"), std::string::npos);
    EXPECT_NE(refused("{not json").find("not JSON"), std::string::npos);
    EXPECT_NE(refused("false").find("admits nothing"), std::string::npos);
    EXPECT_NE(refused(R"({"$ref": "#"})").find("left-recursive"), std::string::npos);
    // a value beside enum or const is a constraint too: refused, except the type, which filters
    EXPECT_NE(refused(R"({"const": 5, "pattern": "x"})").find("'pattern' beside 'const'"), std::string::npos);
    EXPECT_NE(refused(R"({"type": "string", "enum": [1, 2]})").find("no value of 'enum'"), std::string::npos);
    // no finite text: a property that must hold itself
    EXPECT_NE(refused(R"({"properties": {"a": {"$ref": "#"}}, "required": ["a"]})").find("admits no finite text"),
              std::string::npos);
    // counts past what a grammar holds, and a schema nested past the limit (even as text)
    EXPECT_NE(refused(R"({"type": "array", "maxItems": 18446744073709551615})").find("more than the 10000"), std::string::npos);
    EXPECT_NE(refused(R"({"$ref": "#/$defs/a/99999999999999999999999", "$defs": {"a": []}})").find("points at nothing"),
              std::string::npos);
    const std::string deep(100000, '[');
    EXPECT_NE(refused(deep.c_str()).find("nested more than"), std::string::npos);
    // annotations are not constraints
    EXPECT_NO_THROW((void)json_schema_grammar(
        R"({"title": "T", "description": "d", "type": "object", "properties": {"a": {"type": "string", "default": "x",
           "examples": ["y"], "x-order": 1}}, "$schema": "https://json-schema.org/draft/2020-12/schema"})"));
}

// Integer ranges against the arithmetic: every integer near the bounds, and numerals that are
// not canonical (leading zeros, "-0", a lone "-") never.
TEST(IntRangeGrammar, ExactlyTheIntegersBetweenTheBounds) {
    const std::vector<std::pair<std::optional<int64_t>, std::optional<int64_t>>> ranges = {
        {0, 0}, {0, 9}, {1, 9}, {0, 10}, {5, 123}, {17, 17}, {-5, 5}, {-120, -7}, {-1000, 1000}, {99, 1001},
        {1, std::nullopt}, {0, std::nullopt}, {137, std::nullopt}, {-45, std::nullopt}, {std::nullopt, 0},
        {std::nullopt, -1}, {std::nullopt, 250}, {std::nullopt, -250}, {std::nullopt, std::nullopt},
        {-9223372036854775807LL, 9223372036854775807LL}, {1000000, 1000999}};
    for (const auto& [lo, hi] : ranges) {
        GrammarBuilder g;
        const auto grammar = g.compile(add_int_range(g, lo, hi));
        const std::string what = fmt::format("[{}, {}]", lo ? std::to_string(*lo) : "-inf", hi ? std::to_string(*hi) : "inf");
        std::vector<int64_t> probes;
        for (int64_t v = -1300; v <= 1300; ++v) probes.push_back(v);
        for (const auto& b : {lo, hi}) {
            if (!b) continue;
            for (int64_t d = -3; d <= 3; ++d) {
                if ((d < 0 && *b < INT64_MIN - d) || (d > 0 && *b > INT64_MAX - d)) continue;
                probes.push_back(*b + d);
            }
        }
        for (const int64_t v : {int64_t{999999}, int64_t{1000000}, int64_t{1000500}, int64_t{1001000}, int64_t{123456789012345},
                                int64_t{-123456789012345}, int64_t{9999999999999999}}) {
            probes.push_back(v);
        }
        for (const int64_t v : probes) {
            const bool in = (!lo || v >= *lo) && (!hi || v <= *hi);
            ASSERT_EQ(matches(grammar, std::to_string(v)), in) << what << " " << v;
        }
        for (const char* never : {"-0", "00", "01", "-", "", "-01", "+1", "1.0"}) EXPECT_FALSE(matches(grammar, never)) << what << never;
    }
    // in a schema: the bounds of minimum / exclusiveMinimum and maximum / exclusiveMaximum
    const auto g = json_schema_grammar(R"({"type": "integer", "exclusiveMinimum": 2, "maximum": 7.9})");
    for (int v = -2; v < 12; ++v) EXPECT_EQ(matches(g, std::to_string(v)), v >= 3 && v <= 7) << v;
    const auto h = json_schema_grammar(R"({"type": "integer", "minimum": -2.5, "exclusiveMaximum": 4})");
    for (int v = -5; v < 8; ++v) EXPECT_EQ(matches(h, std::to_string(v)), v >= -2 && v <= 3) << v;
}

TEST(ChoiceGrammar, OneOfTheStrings) {
    const std::vector<std::string> choices{"yes", "no", "nope"};
    const auto g = choice_grammar(choices);
    EXPECT_TRUE(matches(g, "no"));
    EXPECT_TRUE(matches(g, "nope"));
    EXPECT_FALSE(matches(g, "noo"));
    GrammarState s(g);
    ASSERT_TRUE(s.advance("no"));
    EXPECT_TRUE(s.complete());
    EXPECT_TRUE(s.can_continue());  // "nope" may follow
    EXPECT_NE(message_of([] { (void)choice_grammar(std::vector<std::string>{}); }).find("empty"), std::string::npos);
    EXPECT_NE(message_of([] { (void)choice_grammar(std::vector<std::string>{"a", ""}); }).find("empty string"), std::string::npos);
}

}  // namespace
}  // namespace tps::structured
