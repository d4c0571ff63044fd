// Structural tags (structural_tag.h): texts the grammar must take and refuse, after the accept and
// reject tables of xgrammar's own tests (tests/python/test_structural_tag_converter.py), the
// triggered-tag modes held against std::regex on random and walked strings, vLLM's older shape,
// and the refusals, each naming where the problem is.
#include "tpserve/engine/structured/structural_tag.h"

#include "grammar_test_support.h"
#include "tpserve/common/error.h"

#include <gtest/gtest.h>

#include <regex>

namespace tps::structured {
namespace {

using testing_support::matches;
using testing_support::mutate;
using testing_support::printable;
using testing_support::walk;

std::shared_ptr<const CompiledGrammar> of(const std::string& format) {
    return structural_tag_grammar(R"({"type": "structural_tag", "format": )" + format + "}");
}

void expect_texts(const std::string& format, std::initializer_list<const char*> taken, std::initializer_list<const char*> refused) {
    const auto g = of(format);
    for (const char* t : taken) EXPECT_TRUE(matches(g, t)) << "should take '" << t << "' under " << format;
    for (const char* t : refused) EXPECT_FALSE(matches(g, t)) << "should refuse '" << t << "' under " << format;
}

// xgrammar's two tags after the trigger "A": A1 L1 A and A2 L2 A.
std::string triggered(bool at_least_one, bool stop_after_first) {
    return std::string(R"({"type": "triggered_tags", "triggers": ["A"], "tags": [
        {"type": "tag", "begin": "A1", "content": {"type": "const_string", "value": "L1"}, "end": "A"},
        {"type": "tag", "begin": "A2", "content": {"type": "const_string", "value": "L2"}, "end": "A"}],
        "at_least_one": )") +
           (at_least_one ? "true" : "false") + R"(, "stop_after_first": )" + (stop_after_first ? "true" : "false") + "}";
}

TEST(StructuralTag, AnyTextInATagStopsAtTheFirstEnd) {
    const std::string tag = R"({"type": "tag", "begin": "BEG", "content": {"type": "any_text"}, "end": "END"})";
    expect_texts(tag, {"BEGHello!END", "BEGENENNDENEND", "BEGEND"}, {"BEGENENDEN", "BEGBEGENDEND", "BEGHello", "Hello"});
    // an end that overlaps itself: the first "aa" ends it
    expect_texts(R"({"type": "tag", "begin": "<", "content": {"type": "any_text"}, "end": "aa"})", {"<baa", "<aa", "<abaa"},
                 {"<aaa", "<baab"});
    // several ends; excluded strings
    expect_texts(R"({"type": "tag", "begin": "<r>", "content": {"type": "any_text", "excludes": ["no"]}, "end": ["</r>", "</a>"]})",
                 {"<r>yes</r>", "<r>yes</a>", "<r>n o</a>"}, {"<r>yes</r></a>", "<r>say no</r>", "<r>yes"});
    // alone: any text to the end of the output, without the excluded strings
    expect_texts(R"({"type": "any_text", "excludes": ["bad"]})", {"", "all good", "ba d"}, {"so bad", "badly"});
}

TEST(StructuralTag, PrimitivesAndComposition) {
    expect_texts(R"({"type": "sequence", "elements": [{"type": "const_string", "value": "Answer: "},
                     {"type": "regex", "pattern": "[0-9]+"}, {"type": "const_string", "value": "."}]})",
                 {"Answer: 42."}, {"Answer: .", "Answer: 4x.", "answer: 4."});
    expect_texts(R"({"type": "or", "elements": [{"type": "const_string", "value": "yes"},
                     {"type": "grammar", "grammar": "root ::= \"n\" \"o\"+"}]})",
                 {"yes", "no", "nooo"}, {"n", "yesno"});
    expect_texts(R"({"type": "tag", "begin": "<n>", "content": {"type": "json_schema", "json_schema": {"type": "integer"}}, "end": "</n>"})",
                 {"<n>12345</n>", "<n>-7</n>"}, {"<n>12345</n></n>", "<n>1.5</n>", "<n></n>"});
    // properties come in the schema's order, not sorted
    expect_texts(R"({"type": "tag", "begin": "<p>", "content": {"type": "json_schema", "json_schema": {"type": "object",
                     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}}, "end": "</p>"})",
                 {R"(<p>{"name": "A", "age": 2}</p>)"}, {R"(<p>{"age": 2, "name": "A"}</p>)"});
    expect_texts(R"({"type": "repeat", "min": 2, "max": 3, "content": {"type": "const_string", "value": "ab"}})", {"abab", "ababab"},
                 {"ab", "abababab"});
    expect_texts(R"({"type": "sequence", "elements": [{"type": "optional", "content": {"type": "const_string", "value": "-"}},
                     {"type": "plus", "content": {"type": "const_string", "value": "1"}}, {"type": "star", "content": {"type": "const_string", "value": "0"}}]})",
                 {"1", "-1100", "11"}, {"-", "0", "10-"});
    // thoughts, then free text
    expect_texts(R"({"type": "sequence", "elements": [{"type": "tag", "begin": "<think>", "content": {"type": "any_text"},
                     "end": "</think>"}, {"type": "any_text"}]})",
                 {"<think>hmm</think>The answer", "<think></think>"}, {"The answer", "<think>hmm"});
}

TEST(StructuralTag, TriggeredTagsInEachMode) {
    expect_texts(triggered(false, false), {"", "text", "A1L1A", "textA1L1AtextA2L2A", "A1L1Atext", "A1L1AA2L2A"},
                 {"AA", "A", "textA3L3A", "A1L2A", "A1L1A2L2A"});
    expect_texts(triggered(true, false), {"A1L1A", "A1L1Atext", "A1L1AtextA2L2A"}, {"", "text", "textA1L1A"});
    expect_texts(triggered(false, true), {"", "text", "A1L1A", "textA1L1A"}, {"A1L1Atext", "textA1L1AtextA2L2A", "A1L1AA2L2A"});
    expect_texts(triggered(true, true), {"A1L1A", "A2L2A"}, {"", "text", "A1L1Atext", "textA1L1A", "A1L1AA2L2A"});
    // inside a tag: the structure ends at the outer end, and nothing follows
    expect_texts(R"({"type": "tag", "begin": "begin", "content": )" + triggered(false, false) + R"(, "end": "end"})",
                 {"beginA1L1Aend", "begintextend", "beginend", "beginxA2L2Ayend"}, {"beginA1L1Aendabc", "beginA1L1A", "beginAend"});
}

// The four modes against std::regex on strings walked through the grammar and their mutations.
TEST(StructuralTag, TriggeredTagsAgreeWithRegularExpressions) {
    const std::string tag = "A(1L1|2L2)A";
    const std::pair<std::string, std::string> modes[] = {
        {triggered(false, false), "([^A]*" + tag + ")*[^A]*"},
        {triggered(true, false), tag + "([^A]*" + tag + ")*[^A]*"},
        {triggered(false, true), "[^A]*(" + tag + ")?"},
        {triggered(true, true), tag},
    };
    const std::string alphabet = "A12Lx";
    std::mt19937 rng(5);
    for (const auto& [format, pattern] : modes) {
        const auto g = of(format);
        const std::regex want(pattern);
        std::vector<std::string> texts;
        for (int i = 0; i < 200; ++i) texts.push_back(walk(g, alphabet, rng));
        for (int i = 0; i < 200; ++i) texts.push_back(mutate(texts[static_cast<size_t>(i)], alphabet, rng));
        int taken = 0;
        for (const std::string& t : texts) {
            const bool m = matches(g, t);
            taken += m ? 1 : 0;
            EXPECT_EQ(m, std::regex_match(t, want)) << printable(t) << " under " << pattern;
        }
        EXPECT_GT(taken, 20) << pattern;  // the walks reach whole texts
    }
}

TEST(StructuralTag, TagsWithSeparator) {
    auto list = [](bool at_least_one, bool stop_after_first) {
        return std::string(R"({"type": "tags_with_separator", "separator": "AA", "tags": [
            {"begin": "A1", "content": {"type": "const_string", "value": "L1"}, "end": "A"},
            {"begin": "A2", "content": {"type": "const_string", "value": "L2"}, "end": "A"}], "at_least_one": )") +
               (at_least_one ? "true" : "false") + R"(, "stop_after_first": )" + (stop_after_first ? "true" : "false") + "}";
    };
    expect_texts(list(false, false), {"", "A1L1A", "A1L1AAAA2L2A"}, {"A1L1AA2L2A", "text", "A1L1AAA"});
    expect_texts(list(true, false), {"A1L1A", "A1L1AAAA2L2A"}, {""});
    expect_texts(list(false, true), {"", "A2L2A"}, {"A1L1AAAA2L2A"});
    expect_texts(R"({"type": "tag", "begin": "[", "content": )" + list(false, false) + R"(, "end": "]"})", {"[]", "[A1L1AAAA2L2A]"},
                 {"[A1L1A", "[A1L1A]x"});
}

TEST(StructuralTag, TextsOutsideAsciiAndTriggersInsideWords) {
    const std::string format = R"({"type": "triggered_tags", "triggers": ["«"], "tags": [
        {"begin": "«x", "content": {"type": "any_text"}, "end": "»"}]})";
    expect_texts(format, {"héllo «xé» ok", "«x»", "日本語"}, {"«y»", "a«", "«xa"});
    // the longer trigger wins where both end; an excluded string wins over a trigger
    expect_texts(R"({"type": "triggered_tags", "triggers": ["<a", "b<a"], "tags": [
        {"begin": "<a>", "content": {"type": "const_string", "value": "1"}, "end": "</a>"},
        {"begin": "b<a!", "content": {"type": "const_string", "value": "2"}, "end": "!"}], "excludes": ["zz"]})",
                 {"x<a>1</a>", "b<a!2!"}, {"b<a>1</a>", "zz", "<a>1</a>zz"});
}

TEST(StructuralTag, VllmsOlderShape) {
    const auto g = structural_tag_grammar(R"({"type": "structural_tag",
        "structures": [{"begin": "<function=get_weather>", "end": "</function>",
                        "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                       {"begin": "<function=get_time>", "end": "</function>", "schema": {"type": "object"}}],
        "triggers": ["<function="]})");
    EXPECT_TRUE(matches(g, R"(Let me look. <function=get_weather>{"city": "Paris"}</function> Done.)"));
    EXPECT_TRUE(matches(g, R"(<function=get_time>{}</function><function=get_weather>{"city": "Oslo"}</function>)"));
    EXPECT_TRUE(matches(g, "No call at all."));
    EXPECT_FALSE(matches(g, R"(<function=get_date>{}</function>)"));
    EXPECT_FALSE(matches(g, R"(<function=get_weather>{"town": "Paris"}</function>)"));
    EXPECT_FALSE(matches(g, R"(<function=get_weather>{"city": "Paris"})"));
}

TEST(StructuralTag, RefusalsNameTheProblemAndWhere) {
    const std::pair<std::string, const char*> cases[] = {
        {"{", "not valid JSON"},
        {"[1]", "must be an object"},
        {R"({"type": "json_schema", "format": {}})", "'type' must be \"structural_tag\""},
        {R"({"type": "structural_tag"})", "'format' is required"},
        {R"({"format": {"type": "nothing"}})", "format: unknown format type 'nothing'"},
        {R"({"format": {"value": "x"}})", "format: a format needs its 'type'"},
        {R"({"format": {"type": "token", "token": 5}})", "format: the format 'token' is not supported"},
        {R"({"format": {"type": "dispatch", "rules": []}})", "the format 'dispatch' is not supported"},
        {R"({"format": {"type": "json_schema", "json_schema": {}, "style": "qwen_xml"}})", "the style \"qwen_xml\" is not supported"},
        {R"({"format": {"type": "json_schema", "json_schema": {"type": "object", "not": {}}}})", "format: "},
        {R"({"format": {"type": "const_string"}})", "format: 'value' is required"},
        {R"({"format": {"type": "regex", "pattern": "(a"}})", "format: "},
        {R"({"format": {"type": "grammar", "grammar": "rot ::= \"a\""}})", "format: GBNF: "},
        {R"({"format": {"type": "sequence", "elements": [{"type": "any_text"}, {"type": "const_string", "value": "x"}]}})",
         "format.elements[0]: any_text is open-ended"},
        {R"({"format": {"type": "sequence", "elements": []}})", "'elements' must be a non-empty array"},
        {R"({"format": {"type": "or", "elements": [{"type": "any_text"}, {"type": "const_string", "value": "x"}]}})",
         "all open-ended or none"},
        {R"({"format": {"type": "tag", "begin": "<", "content": {"type": "any_text"}, "end": ""}})", "format.content: any_text is open-ended"},
        {R"({"format": {"type": "tag", "begin": "<", "content": {"type": "const_string", "value": "x"}, "end": []}})",
         "'end' must be a string or a non-empty array"},
        {R"({"format": {"type": "star", "content": {"type": "any_text"}}})", "format.content: any_text is open-ended"},
        {R"({"format": {"type": "repeat", "min": 3, "max": 2, "content": {"type": "const_string", "value": "x"}}})", "format: "},
        {R"({"format": {"type": "any_text", "max_chars": 5}})", "'max_chars' is not supported"},
        {R"({"format": {"type": "triggered_tags", "triggers": [], "tags": [{"begin": "a", "content": {"type": "const_string", "value": ""}, "end": "b"}]}})",
         "'triggers' must not be empty"},
        {R"({"format": {"type": "triggered_tags", "triggers": [""], "tags": []}})", "'triggers' must hold non-empty strings"},
        {R"({"format": {"type": "triggered_tags", "triggers": ["<f"], "tags": [{"begin": "<g", "content": {"type": "const_string", "value": ""}, "end": ">"}]}})",
         "format.tags[0]: its begin '<g' starts with none of the triggers"},
        {R"({"format": {"type": "triggered_tags", "triggers": ["<", "<f"], "tags": [{"begin": "<f", "content": {"type": "const_string", "value": ""}, "end": ">"}]}})",
         "starts with two triggers"},
        {R"({"format": {"type": "triggered_tags", "triggers": ["<f", "<g"], "tags": [{"begin": "<f", "content": {"type": "const_string", "value": ""}, "end": ">"}]}})",
         "the trigger '<g' starts none of the tags"},
        {R"({"structures": [{"begin": "<f>", "end": "</f>"}], "triggers": ["<f"]})", "structures[0]: 'schema' must be a JSON schema"},
        {R"({"structures": [{"begin": "<f>", "end": "</f>", "schema": {}}]})", "'triggers' is required"},
        {R"({"structures": [{"begin": "<f>", "end": "</f>", "schema": {"type": "object", "not": {}}}], "triggers": ["<f"]})",
         "structures[0].schema: "},
    };
    for (const auto& [object, words] : cases) {
        try {
            structural_tag_grammar(object);
            ADD_FAILURE() << "accepted: " << object;
        } catch (const UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << object << ": " << e.what();
            EXPECT_TRUE(std::string(e.what()).starts_with("structural tag: ")) << e.what();
        }
    }
    // nested past the limit
    std::string deep = R"({"type": "const_string", "value": "x"})";
    for (int i = 0; i <= kMaxStructuralTagDepth; ++i) deep = R"({"type": "optional", "content": )" + deep + "}";
    EXPECT_THROW(of(deep), UsageError);
    EXPECT_THROW(structural_tag_grammar(std::string(kMaxStructuralTagBytes + 1, ' ')), UsageError);
}

}  // namespace
}  // namespace tps::structured
